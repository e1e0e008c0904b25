"""Connecting to the source: raw reads, one clear error per bad input,
never a password in a message; replica-set check; oplog edges."""

from __future__ import annotations

import socket

import bson
import pymongo
import pytest
from bson import Timestamp
from bson.raw_bson import RawBSONDocument

from backupflows.errors import SourceError
from backupflows.source.client import RAW, SourceUnavailable, connect, display_uri
from backupflows.source.topology import (
    check_replica_set,
    fetch_start_optime,
    newest_optime,
    oldest_optime,
)
from tests.source.standalone import StandaloneServer

SECRET = "hunter2secret"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line_without_secret(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert SECRET not in text and "\n" not in text
    return text


def test_reads_come_back_raw_and_the_client_names_itself(sandbox, source) -> None:
    plain = pymongo.MongoClient(sandbox.uri)
    plain.db.c.insert_one({"_id": 1, "x": 1.5})
    doc = source.db.c.find_one()
    assert isinstance(doc, RawBSONDocument)
    raw_plain = plain.get_database("db", codec_options=RAW).c.find_one()
    assert doc.raw == raw_plain.raw
    # the fail point only hits connections whose hello said appname "backupflows"
    sandbox.faults.configure({"times": 1}, {"failCommands": ["find"], "errorCode": 2,
                                            "appName": "backupflows"})
    assert plain.db.c.find_one() == {"_id": 1, "x": 1.5}
    with pytest.raises(pymongo.errors.OperationFailure):
        source.db.c.find_one()
    plain.close()


def test_unreachable_source_is_one_line_without_the_password() -> None:
    uri = f"mongodb://backup:{SECRET}@127.0.0.1:{_closed_port()}/?replicaSet=rs0"
    with pytest.raises(SourceError) as exc:
        connect(uri, timeout_s=0.5)
    text = _one_line_without_secret(exc)
    assert text.startswith("cannot reach source mongodb://backup:***@127.0.0.1:")
    assert "refused" in text.lower()


@pytest.mark.parametrize("uri", [
    "http://example.com/",
    "mongodb://",
    f"mongodb://admin:{SECRET}@bad@127.0.0.1/",          # unescaped @ in the password
    f"mongodb://admin:{SECRET}/x@127.0.0.1/",            # unescaped / in the password
    f"mongodb://admin:{SECRET}@127.0.0.1:99999/",        # port out of range
    f"mongodb://admin:{SECRET}@127.0.0.1/?w=banana&wtimeoutMS=x",
])
def test_bad_uri_is_one_clear_line_without_the_password(uri: str) -> None:
    with pytest.raises(SourceError) as exc:
        connect(uri, timeout_s=0.5)
    text = _one_line_without_secret(exc)
    assert text.startswith("bad source URI ")


def test_empty_uri() -> None:
    with pytest.raises(SourceError, match="no source URI"):
        connect("  ")


@pytest.mark.sandbox_only
def test_failed_login_says_authentication_and_hides_the_password(sandbox) -> None:
    uri = f"mongodb://backup:{SECRET}@{sandbox.address}/?replicaSet=rs0"
    with pytest.raises(SourceError) as exc:
        connect(uri)
    text = _one_line_without_secret(exc)
    assert "authentication failed" in text and "backup:***@" in text


def test_display_uri_masks_every_form_of_password() -> None:
    assert display_uri(f"mongodb://u:{SECRET}@h:1/db?authSource=admin") == \
        "mongodb://u:***@h:1/db?authSource=admin"
    assert SECRET not in display_uri(f"mongodb://u:{SECRET}@x@h/")
    assert display_uri("mongodb://h1,h2/?replicaSet=rs") == "mongodb://h1,h2/?replicaSet=rs"


def test_replica_set_info(sandbox, source) -> None:
    info = check_replica_set(source)
    assert info.set_name == "rs0"
    assert info.members == [sandbox.address] and info.primary == sandbox.address
    assert info.version.count(".") == 2 and info.max_wire_version >= 8


def test_a_standalone_server_is_not_a_replica_set() -> None:
    server = StandaloneServer()
    try:
        client = connect(server.uri, timeout_s=2)
        with pytest.raises(SourceError) as exc:
            check_replica_set(client)
        assert "is not a replica set: no oplog to follow" in str(exc.value)
        assert f"127.0.0.1:{server.port}" in str(exc.value)
        client.close()
    finally:
        server.stop()


def test_newest_and_oldest_optime_follow_the_oplog(mongo_client, source, unique_db) -> None:
    before = newest_optime(source)
    mongo_client[unique_db].c.insert_many([{"_id": i} for i in range(3)])
    after = newest_optime(source)
    last = mongo_client.local["oplog.rs"].find_one(sort=[("$natural", -1)])
    first = mongo_client.local["oplog.rs"].find_one(sort=[("$natural", 1)])
    assert after == last["ts"] and after > before
    assert oldest_optime(source) == first["ts"] <= before


def test_transient_and_permanent_failures_are_told_apart(sandbox, source) -> None:
    with pytest.raises(SourceUnavailable):
        connect(f"mongodb://127.0.0.1:{_closed_port()}/", timeout_s=0.3)
    with pytest.raises(SourceError) as exc:
        connect("mongodb://h:notaport/")
    assert not isinstance(exc.value, SourceUnavailable)
    sandbox.faults.configure("alwaysOn", {"failCommands": ["find"], "errorCode": 91})
    try:
        with pytest.raises(SourceUnavailable, match="ShutdownInProgress|shutting|91"):
            newest_optime(source)
    finally:
        sandbox.clear_faults()
    sandbox.fail_commands(["find"], error_code=2, times=1)          # BadValue: permanent
    with pytest.raises(SourceError) as exc:
        newest_optime(source)
    assert not isinstance(exc.value, SourceUnavailable) and "(code 2)" in str(exc.value)


@pytest.mark.sandbox_only
def test_fetch_start_is_the_newest_entry_without_open_transactions(mongo_client, source,
                                                                   unique_db) -> None:
    mongo_client[unique_db].c.insert_one({"_id": 1})
    assert fetch_start_optime(source) == newest_optime(source)   # no config.transactions
    with mongo_client.start_session() as session, session.start_transaction():
        mongo_client[unique_db].c.insert_one({"_id": 2}, session=session)
    assert fetch_start_optime(source) == newest_optime(source)   # committed: nothing open


@pytest.mark.sandbox_only
def test_fetch_start_goes_back_to_the_oldest_open_transaction(mongo_client, source,
                                                              unique_db) -> None:
    """config.transactions as the server keeps it for a large (partialTxn) or
    prepared transaction: its first oplog entry is where fetching must start."""
    coll = mongo_client[unique_db].c
    coll.insert_one({"_id": 1})
    first = newest_optime(source)
    coll.insert_one({"_id": 2})
    second = newest_optime(source)
    coll.insert_many([{"_id": i} for i in range(3, 10)])
    table = mongo_client.config.transactions
    lsid = {"id": bson.Binary(b"\x01" * 16, 4), "uid": b"\x00" * 32}
    table.insert_many([
        {"_id": dict(lsid, id=bson.Binary(b"\x02" * 16, 4)), "txnNum": 4, "state": "committed",
         "startOpTime": {"ts": Timestamp(1, 1), "t": 1}},
        {"_id": lsid, "txnNum": 7, "state": "inProgress",
         "startOpTime": {"ts": second, "t": 1}, "lastWriteOpTime": {"ts": second, "t": 1}},
        {"_id": dict(lsid, id=bson.Binary(b"\x03" * 16, 4)), "txnNum": 2, "state": "prepared",
         "startOpTime": {"ts": first, "t": 1}},
        {"_id": dict(lsid, id=bson.Binary(b"\x04" * 16, 4)), "txnNum": 1, "state": "inProgress"},
    ])
    assert fetch_start_optime(source) == first
