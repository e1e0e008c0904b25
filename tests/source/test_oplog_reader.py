"""Oplog rounds: contiguous, bounded, raw; gaps detected; faults retried;
segments as stored objects."""

from __future__ import annotations

import threading
import time

import pymongo
import pytest
from bson import Timestamp

from backupflows.errors import IntegrityError, OplogError, SourceError
from backupflows.oplog.segments import (
    check_chain,
    decode_segment,
    encode_round,
    encode_segment,
    entry_ts,
    segment_header,
    ts_int,
    ts_of,
)
from backupflows.source.client import RAW, Backoff
from backupflows.source.oplog_reader import read_round
from backupflows.source.topology import newest_optime
from backupflows.storage import container
from tests.source.conftest import FAST


def _oplog_after(client: pymongo.MongoClient, ts: Timestamp) -> list[bytes]:
    """The oplog after ``ts`` as the server holds it (raw), user entries only."""
    oplog = client.get_database("local", codec_options=RAW)["oplog.rs"]
    return [d.raw for d in oplog.find({"ts": {"$gt": ts}}).sort("$natural", 1)
            if not d["ns"].startswith(("local.", "config.system.sessions"))]


def _drain(source, after: Timestamp, **limits) -> tuple[list[bytes], list]:
    """Rounds until caught up: all entries, and the rounds."""
    entries, rounds = [], []
    while True:
        r = read_round(source, after, until_caught_up=True, max_seconds=5, await_ms=200,
                       **limits)
        assert not r.gap
        rounds.append(r)
        entries += r.entries
        if r.last_ts == after:
            return entries, rounds
        after = r.last_ts


def test_a_round_returns_the_writes_after_t0_raw_and_in_order(mongo_client, source, unique_db):
    t0 = newest_optime(source)
    coll = mongo_client[unique_db].c
    coll.insert_many([{"_id": i} for i in range(20)])
    coll.update_one({"_id": 3}, {"$set": {"x": 1}})
    coll.delete_one({"_id": 4})
    r = read_round(source, t0, max_seconds=5, until_caught_up=True)
    assert not r.gap and r.stop == "caught_up" and r.caught_up and r.after_ts == t0
    assert r.entries == _oplog_after(mongo_client, t0)     # t0's own entry not repeated
    assert r.count == 23                       # create, 20 inserts, update, delete
    assert r.nbytes == sum(map(len, r.entries))
    assert r.last_ts == ts_of(entry_ts(r.entries[-1])) == newest_optime(source)
    assert r.first_ts > t0


def test_rounds_bounded_by_bytes_and_entries_chain_exactly(mongo_client, source, unique_db):
    t0 = newest_optime(source)
    mongo_client[unique_db].c.insert_many([{"_id": i, "p": "x" * 200} for i in range(300)])
    expected = _oplog_after(mongo_client, t0)
    for limits in ({"max_bytes": 5000}, {"max_entries": 7}):
        entries, rounds = _drain(source, t0, **limits)
        assert entries == expected
        full = rounds[:-2]
        assert len(full) >= 10
        for r in full:
            assert r.stop in ("bytes", "entries") and not r.caught_up
            if "max_bytes" in limits:
                assert r.nbytes >= 5000 and r.nbytes - len(r.entries[-1]) < 5000
            else:
                assert r.count == 7
        assert all(a.last_ts == b.after_ts for a, b in zip(rounds, rounds[1:]))


def test_an_idle_round_ends_on_time_without_entries(source) -> None:
    t0 = newest_optime(source)
    start = time.monotonic()
    r = read_round(source, t0, max_seconds=0.6, await_ms=200)
    elapsed = time.monotonic() - start
    assert r.stop == "time" and r.count == 0 and r.last_ts == t0 and not r.gap
    assert r.caught_up
    assert 0.5 <= elapsed < 3.0


def test_tailing_picks_up_a_write_made_during_the_round(mongo_client, source, unique_db):
    mongo_client[unique_db].create_collection("c")
    t0 = newest_optime(source)
    timer = threading.Timer(0.4, lambda: mongo_client[unique_db].c.insert_one({"_id": "late"}))
    timer.start()
    start = time.monotonic()
    r = read_round(source, t0, max_seconds=10, max_entries=1)
    timer.join()
    assert r.stop == "entries" and r.count == 1 and time.monotonic() - start < 5
    assert b"late" in r.entries[0]


@pytest.mark.sandbox_only
def test_gap_when_the_oplog_rolled_over(sandbox, mongo_client, source, unique_db):
    t0 = newest_optime(source)
    coll = mongo_client[unique_db].c
    coll.insert_many([{"_id": i} for i in range(10)])
    newer = newest_optime(source)
    coll.insert_one({"_id": "after"})
    sandbox.truncate_oplog_before(newer.time, newer.inc)
    r = read_round(source, t0, max_seconds=2)
    assert r.gap and r.stop == "gap" and r.count == 0 and r.last_ts == t0
    assert r.oldest_ts == newer
    assert "rolled over" in r.gap_reason and f"Timestamp({t0.time}, {t0.inc})" in r.gap_reason
    ok = read_round(source, newer, max_seconds=2, until_caught_up=True)
    assert not ok.gap and ok.count == 1


@pytest.mark.sandbox_only
def test_small_capped_oplog_overwritten_between_rounds(make_sandbox) -> None:
    server = make_sandbox(oplog_size_bytes=64 * 1024)
    plain = pymongo.MongoClient(server.uri)
    from backupflows.source.client import connect
    source = connect(server.uri)
    first = read_round(source, newest_optime(source), max_seconds=1, until_caught_up=True)
    position = first.last_ts
    for i in range(50):
        plain.db.c.insert_many([{"_id": f"{i}-{j}", "p": "x" * 500} for j in range(10)])
    r = read_round(source, position, max_seconds=2)
    assert r.gap and "rolled over" in r.gap_reason
    source.close()
    plain.close()


@pytest.mark.sandbox_only
def test_internal_namespaces_are_dropped_but_advance_the_position(mongo_client, source,
                                                                  unique_db):
    for ns in ("config.system.sessions", "config.transactions", f"{unique_db}.c"):
        mongo_client[ns.split(".")[0]][ns.split(".", 1)[1]].insert_one({"_id": "first"})
    t0 = newest_optime(source)
    mongo_client.config["system.sessions"].insert_one({"_id": 1})
    mongo_client.config.transactions.insert_one({"_id": 2})
    mongo_client[unique_db].c.insert_one({"_id": "kept"})
    mongo_client.config["system.sessions"].insert_one({"_id": 3})
    r = read_round(source, t0, max_seconds=2, until_caught_up=True, await_ms=200)
    assert r.count == 1 and b"kept" in r.entries[0] and r.dropped == 3
    assert r.last_ts == newest_optime(source) > r.first_ts
    again = read_round(source, r.last_ts, max_seconds=1, until_caught_up=True)
    assert again.count == 0 and again.dropped == 0 and not again.gap


@pytest.mark.sandbox_only
@pytest.mark.parametrize("fault", [
    {"error_code": 0, "close_connection": True},
    {"error_code": 11602},                           # InterruptedDueToReplStateChange
])
def test_getmore_failures_during_a_round_are_retried(sandbox, source, unique_db, fault):
    plain = pymongo.MongoClient(sandbox.uri)
    t0 = newest_optime(source)
    plain[unique_db].c.insert_many([{"_id": i, "p": "q" * 100} for i in range(500)])
    expected = _oplog_after(plain, t0)
    sandbox.fail_commands(["getMore"], times=2, **fault)
    r = read_round(source, t0, max_seconds=5, until_caught_up=True, backoff=FAST,
                   await_ms=200)
    assert r.entries == expected and not r.gap
    assert sandbox.faults.times_entered == 2
    plain.close()


@pytest.mark.sandbox_only
def test_connections_dropped_between_batches_of_a_live_round(sandbox, source, unique_db):
    plain = pymongo.MongoClient(sandbox.uri)
    t0 = newest_optime(source)
    stop = threading.Event()

    def chaos() -> None:
        for i in range(40):
            plain[unique_db].c.insert_one({"_id": i})
            if i % 8 == 0:
                sandbox.close_all_connections()
            time.sleep(0.01)
        stop.set()

    thread = threading.Thread(target=chaos)
    thread.start()
    entries, after = [], t0
    while not stop.is_set() or after != newest_optime(source):
        r = read_round(source, after, max_seconds=0.5, await_ms=100, backoff=FAST)
        entries += r.entries
        after = r.last_ts
    thread.join()
    assert entries == _oplog_after(plain, t0)
    plain.close()


@pytest.mark.sandbox_only
def test_a_source_that_keeps_failing_is_a_source_error(sandbox, source) -> None:
    t0 = newest_optime(source)
    sandbox.faults.configure("alwaysOn", {"failCommands": ["find"], "errorCode": 91})
    try:
        with pytest.raises(SourceError, match="tailing the oplog .* gave up after 2 attempts"):
            read_round(source, t0, max_seconds=2, backoff=Backoff(attempts=2, first_s=0.01))
    finally:
        sandbox.clear_faults()


def test_bad_limits_are_refused(source) -> None:
    with pytest.raises(ValueError):
        read_round(source, Timestamp(1, 1), max_seconds=0)


# -- segments ----------------------------------------------------------------

def test_segments_round_trip_and_chain(mongo_client, source, unique_db):
    t0 = newest_optime(source)
    mongo_client[unique_db].c.insert_many([{"_id": i} for i in range(50)])
    _, rounds = _drain(source, t0, max_entries=20)
    data = [encode_round(r, job=3) for r in rounds if r.last_ts != r.after_ts]
    headers = [segment_header(d) for d in data]
    assert [h.count for h in headers] == [20, 20, 11]     # 50 inserts and the create
    assert headers[0].after_ts == t0 and headers[0].extra == {"job": 3}
    assert check_chain(headers, t0) == rounds[-1].last_ts
    assert [e for d in data for e in decode_segment(d)] == _oplog_after(mongo_client, t0)
    kind, raw_header = container.read_header(__import__("io").BytesIO(data[0]))
    assert kind == b"OPSG" and raw_header["count"] == 20
    with pytest.raises(IntegrityError, match="hole or an overlap"):
        check_chain([headers[0], headers[2]], t0)


def test_corrupt_or_lying_segments_are_refused(mongo_client, source, unique_db):
    t0 = newest_optime(source)
    mongo_client[unique_db].c.insert_many([{"_id": i} for i in range(5)])
    r = read_round(source, t0, max_seconds=2, until_caught_up=True, await_ms=200)
    good = encode_round(r)
    header, payload = container.unpack(good)
    swapped = r.entries[1] + r.entries[0] + b"".join(r.entries[2:])
    with pytest.raises(IntegrityError, match="out of order"):
        list(decode_segment(container.pack(b"OPSG", header, swapped)))
    with pytest.raises(IntegrityError, match=f"header says {r.count + 1}"):
        list(decode_segment(container.pack(b"OPSG", dict(header, count=r.count + 1), payload)))
    early = dict(header, last_ts={"t": r.first_ts.time, "i": r.first_ts.inc})
    with pytest.raises(IntegrityError, match="out of range"):
        list(decode_segment(container.pack(b"OPSG", early, payload)))
    with pytest.raises(IntegrityError):
        list(decode_segment(container.pack(b"OPSG", header, payload[:-2])))
    with pytest.raises(OplogError):
        encode_segment(r.entries, after_ts=r.last_ts)
    assert ts_of(ts_int(Timestamp(7, 9))) == Timestamp(7, 9)


@pytest.mark.sandbox_only
def test_oplog_overwritten_under_the_cursor_ends_the_round_then_reports_the_gap(
        sandbox, mongo_client, source, unique_db):
    mongo_client[unique_db].create_collection("c")
    t0 = newest_optime(source)
    mongo_client[unique_db].c.insert_many([{"_id": i} for i in range(500)])
    newest = newest_optime(source)
    before = _oplog_after(mongo_client, t0)
    # the first getMore waits; meanwhile the oplog loses everything but its newest entry
    sandbox.fail_commands(["getMore"], times=1, block_ms=600)
    timer = threading.Timer(0.2, sandbox.truncate_oplog_before, (newest.time, newest.inc))
    timer.start()
    r = read_round(source, t0, max_seconds=5)
    timer.join()
    assert r.stop == "position_lost" and not r.gap
    assert r.count == 100                     # the first batch (101) minus t0's own entry
    assert r.entries == before[:100] and r.last_ts == ts_of(entry_ts(before[99]))
    nxt = read_round(source, r.last_ts, max_seconds=2)
    assert nxt.gap and nxt.count == 0 and nxt.oldest_ts == newest
