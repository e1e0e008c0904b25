"""Sandbox-only behaviour: the capped oplog, periodic noops, the command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import bson
import pymongo
import pytest
from click.testing import CliRunner
from pymongo.errors import OperationFailure

from backupflows.cli import cli

pytestmark = pytest.mark.sandbox_only


def test_oplog_is_capped_by_bytes(make_sandbox):
    server = make_sandbox(oplog_size_bytes=64 * 1024)
    with pymongo.MongoClient(server.uri) as client:
        client.c.c.insert_many([{"_id": i, "pad": "x" * 500} for i in range(400)])
        oplog = client.local.oplog.rs
        total = sum(len(bson.encode(e)) for e in oplog.find())
        assert total <= 64 * 1024
        first = oplog.find_one({}, sort=[("$natural", 1)])
        assert first["o"]["_id"] > 0  # the oldest entries dropped off
        assert oplog.find_one({}, sort=[("$natural", -1)])["o"]["_id"] == 399
        stats = client.admin.command("serverStatus")["oplog"]
        assert stats["usedBytes"] <= 64 * 1024


def test_tailing_cursor_that_fell_off_the_oplog_is_killed(make_sandbox):
    server = make_sandbox(oplog_size_bytes=32 * 1024)
    with pymongo.MongoClient(server.uri) as client:
        client.c.c.insert_one({"_id": -1})
        local = client.local
        oplog = local.oplog.rs
        cursor = oplog.find({}, cursor_type=pymongo.CursorType.TAILABLE_AWAIT
                            ).max_await_time_ms(100)
        assert len(list(cursor)) >= 1 and cursor.alive
        reply = local.command("find", "oplog.rs", tailable=True, awaitData=True)
        raw_id = reply["cursor"]["id"]
        client.c.c.insert_many([{"_id": i, "pad": "y" * 1000} for i in range(100)])
        with pytest.raises(OperationFailure) as info:
            local.command("getMore", raw_id, collection="oplog.rs", maxTimeMS=100)
        assert info.value.code == 136
        assert info.value.details["codeName"] == "CappedPositionLost"
        assert list(cursor) == [] and not cursor.alive  # pymongo ends it quietly
        # A new tail from a timestamp that fell off starts at the oldest entry.
        oldest = oplog.find_one({}, sort=[("$natural", 1)])
        gap = list(oplog.find({"ts": {"$gte": bson.Timestamp(1, 0)}}).limit(1))
        assert gap[0]["ts"] == oldest["ts"]


def test_await_data_honours_max_await_time(sandbox):
    with pymongo.MongoClient(sandbox.uri) as client:
        last = client.local.oplog.rs.find_one({}, sort=[("$natural", -1)])["ts"]
        cursor = client.local.oplog.rs.find(
            {"ts": {"$gt": last}}, cursor_type=pymongo.CursorType.TAILABLE_AWAIT
        ).max_await_time_ms(400)
        list(cursor)
        started = time.monotonic()
        assert list(cursor) == []
        waited = time.monotonic() - started
        assert 0.35 <= waited < 1.5 and cursor.alive
        cursor.close()


def test_tailable_cursor_needs_a_capped_collection(sandbox):
    with pymongo.MongoClient(sandbox.uri) as client:
        client.c.c.insert_one({})
        with pytest.raises(OperationFailure) as info:
            list(client.c.c.find(cursor_type=pymongo.CursorType.TAILABLE))
        assert info.value.code == 2


def test_periodic_noop_only_when_idle(make_sandbox):
    server = make_sandbox(noop_interval=0.2)
    with pymongo.MongoClient(server.uri) as client:
        noops = client.local.oplog.rs
        time.sleep(0.7)
        idle = list(noops.find({"op": "n", "o.msg": "periodic noop"}))
        assert len(idle) >= 2
        assert idle[0]["ns"] == "" and "ui" not in idle[0]
        assert list(idle[0]) == ["op", "ns", "o", "ts", "t", "v", "wall"]
        busy_from = noops.find_one({}, sort=[("$natural", -1)])["ts"]
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:  # a write every 20 ms: no noop needed
            client.c.c.insert_one({})
            time.sleep(0.02)
        busy = noops.count_documents({"op": "n", "ts": {"$gt": busy_from}})
        assert busy <= 1


def test_timestamps_strictly_increase(sandbox):
    with pymongo.MongoClient(sandbox.uri) as client:
        for i in range(50):
            client.c.c.insert_one({"_id": i})
        stamps = [e["ts"] for e in client.local.oplog.rs.find()]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert abs(stamps[-1].time - time.time()) < 5


def test_cli_help():
    result = CliRunner().invoke(cli, ["sandbox", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output and "--oplog-size-mb" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_runs_a_sandbox_in_the_foreground():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from backupflows.cli import main; main()", "sandbox",
         "--port", str(port), "--noop-interval", "0.5", "--oplog-size-mb", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    try:
        with pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?replicaSet=rs0",
                                 serverSelectionTimeoutMS=10000) as client:
            client.cli.c.insert_one({"_id": 1})
            assert client.cli.c.find_one() == {"_id": 1}
            opts = client.admin.command("getCmdLineOpts")["parsed"]["replication"]
            assert opts["replSet"] == "rs0" and opts["oplogSizeMB"] == 1
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert b"listening" in err


def test_cli_reports_a_busy_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-c", "from backupflows.cli import main; main()", "sandbox",
             "--port", str(port)], capture_output=True, timeout=20)
    assert result.returncode != 0
    assert b"cannot listen" in result.stderr and b"Traceback" not in result.stderr


def test_batches_stay_under_16_mb(sandbox):
    from pymongo import monitoring

    class Sizes(monitoring.CommandListener):
        batches: list[int] = []

        def started(self, event) -> None:
            pass

        def succeeded(self, event) -> None:
            cursor = event.reply.get("cursor") or {}
            batch = cursor.get("firstBatch", cursor.get("nextBatch"))
            if batch is not None:
                self.batches.append(sum(len(bson.encode(d)) for d in batch))

        def failed(self, event) -> None:
            pass

    listener = Sizes()
    with pymongo.MongoClient(sandbox.uri, event_listeners=[listener]) as client:
        client.big.c.insert_many([{"_id": i, "pad": "z" * 1_000_000} for i in range(40)])
        assert sum(1 for _ in client.big.c.find()) == 40
    assert len(listener.batches) >= 3
    assert max(listener.batches) <= 16 * 1024 * 1024


def test_abandoned_transaction_is_rolled_back_after_its_lifetime(sandbox):
    with pymongo.MongoClient(sandbox.uri) as client:
        coll = client.t.c
        coll.insert_one({"_id": 0})
        with client.start_session() as session:
            session.start_transaction()
            coll.insert_one({"_id": 1}, session=session)
            assert coll.count_documents({}) == 2  # no snapshot isolation (documented)
            with sandbox.store.lock:
                assert sandbox.store.sessions.reap(time.monotonic() + 61) == 1
            assert [d["_id"] for d in coll.find()] == [0]
            with pytest.raises(OperationFailure) as info:
                session.commit_transaction()
            assert info.value.code == 251
        assert client.local.oplog.rs.count_documents({"ns": "admin.$cmd"}) == 0
