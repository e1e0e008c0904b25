"""Fault injection: dropped connections, failing commands, latency, oplog gaps."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pymongo
import pytest
from bson import SON
from bson.timestamp import Timestamp
from pymongo.errors import AutoReconnect, NotPrimaryError, OperationFailure

pytestmark = pytest.mark.sandbox_only


def fail_point(client: pymongo.MongoClient, mode, **data) -> dict:
    return client.admin.command(SON([("configureFailPoint", "failCommand"), ("mode", mode),
                                     ("data", data)]))


@pytest.fixture
def client(sandbox) -> Iterator[pymongo.MongoClient]:
    with pymongo.MongoClient(sandbox.uri, serverSelectionTimeoutMS=5000) as c:
        c.admin.command("ping")
        yield c


def test_pymongo_reconnects_after_all_connections_close(sandbox, client):
    coll = client.f.c
    coll.insert_one({"_id": 1})
    assert sandbox.close_all_connections() >= 1
    assert coll.find_one({"_id": 1}) == {"_id": 1}  # a retryable read: reconnects
    coll.insert_one({"_id": 2})
    assert client.admin.command("sandboxCloseConnections")["ok"] == 1.0
    assert coll.count_documents({}) == 2
    assert client.admin.command("ping")["ok"] == 1.0


def test_failed_command_returns_the_chosen_code(client):
    coll = client.f.c
    assert fail_point(client, {"times": 1}, failCommands=["insert"], errorCode=2)["ok"] == 1
    with pytest.raises(OperationFailure) as info:
        coll.insert_one({"_id": 1})
    assert info.value.code == 2
    coll.insert_one({"_id": 1})  # only the next insert failed
    assert coll.count_documents({}) == 1


def test_not_writable_primary_without_and_with_retryable_writes(sandbox, client):
    with pymongo.MongoClient(sandbox.uri, retryWrites=False) as no_retry:
        fail_point(no_retry, {"times": 1}, failCommands=["insert"], errorCode=10107)
        with pytest.raises(NotPrimaryError) as info:
            no_retry.f.c.insert_one({"_id": "a"})
        assert info.value.details["code"] == 10107
    fail_point(client, {"times": 1}, failCommands=["insert"], errorCode=10107)
    client.f.c.insert_one({"_id": "b"})  # retried: the server labels it RetryableWriteError
    assert [d["_id"] for d in client.f.c.find()] == ["b"]
    inserts = list(client.local.oplog.rs.find({"ns": "f.c", "op": "i"}))
    assert len(inserts) == 1


def test_dropped_connection_is_retried_by_retryable_reads(client):
    client.f.c.insert_one({"_id": 1})
    fail_point(client, {"times": 1}, failCommands=["find"], closeConnection=True)
    assert client.f.c.find_one() == {"_id": 1}
    assert fail_point(client, "off")["count"] == 1


def test_a_dropped_command_is_an_error_when_not_retryable(sandbox, client):
    sandbox.fail_commands(["ping"], close_connection=True)
    with pytest.raises(AutoReconnect):
        client.admin.command("ping")
    assert client.admin.command("ping")["ok"] == 1.0


def test_python_api_fails_any_command_n_times(sandbox, client):
    sandbox.fail_commands(None, error_code=91, times=2)  # ShutdownInProgress
    with pytest.raises(NotPrimaryError) as info:
        client.admin.command("ping")
    assert info.value.details["code"] == 91
    sandbox.fail_commands(None, error_code=2)
    with pytest.raises(OperationFailure) as info:
        client.admin.command("buildInfo")
    assert info.value.code == 2
    assert client.admin.command("ping")["ok"] == 1.0


def test_block_connection_and_latency(sandbox, client):
    fail_point(client, {"times": 1}, failCommands=["ping"], blockConnection=True,
               blockTimeMS=300)
    started = time.monotonic()
    client.admin.command("ping")
    assert time.monotonic() - started >= 0.3
    client.admin.command("sandboxSetLatency", 1, ms=150)
    started = time.monotonic()
    client.admin.command("ping")
    assert time.monotonic() - started >= 0.15
    sandbox.set_latency(0)
    started = time.monotonic()
    client.admin.command("ping")
    assert time.monotonic() - started < 0.15


def test_truncate_oplog_before_a_timestamp(sandbox, client):
    client.f.c.insert_many([{"_id": i} for i in range(5)])
    entries = list(client.local.oplog.rs.find({"ns": "f.c"}))
    cut = entries[3]["ts"]
    removed = client.admin.command("sandboxTruncateOplog", 1, before=cut)["removed"]
    assert removed >= 4
    oldest = client.local.oplog.rs.find_one({}, sort=[("$natural", 1)])
    assert oldest["ts"] == cut
    assert sandbox.truncate_oplog_before(2**31) >= 1
    assert client.local.oplog.rs.count_documents({}) == 1  # the newest entry stays


def test_fail_point_arguments_are_checked(client):
    with pytest.raises(OperationFailure):
        fail_point(client, "sometimes", failCommands=["find"])
    with pytest.raises(OperationFailure):
        client.admin.command("sandboxTruncateOplog", 1, before=Timestamp(1, 1).time)
    with pytest.raises(OperationFailure) as info:
        client.f.command("sandboxCloseConnections")
    assert info.value.code == 13
