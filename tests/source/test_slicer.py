"""Slices: every document exactly once, in _id order, across mixed _id types,
bounded in size, resumable after a crash, retried through faults."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import threading

import bson
import pymongo
import pytest
from bson import Binary, Decimal128, Int64, MaxKey, MinKey, ObjectId, Timestamp

from backupflows.bsonorder import id_key, raw_id, value_key
from backupflows.errors import IntegrityError, SourceError
from backupflows.source.client import RAW, Backoff, SourceUnavailable
from backupflows.source.namespaces import NamespaceFilter, list_namespaces
from backupflows.source.slicer import (
    CollectionGone,
    IdRange,
    decode_slice,
    encode_slice,
    plan_ranges,
    read_range,
    slice_header,
)
from backupflows.storage import container
from tests.source.conftest import FAST

# _id values of every type a collection may hold; numbers of all kinds interleave
MIXED_IDS = [
    MinKey(), None, -7, Int64(-3), -2.5, 0, 1, 2.5, Int64(3), 4.0, Decimal128("4.5"), 10 ** 12,
    float("inf"), "", "a", "b", "b\x00c", "é", {"x": 1}, {"x": 1, "y": 2}, {"y": 0},
    Binary(b"\x01", 0), Binary(b"\x00\x00", 0), Binary(b"\x01", 5),
    ObjectId("000000000000000000000001"), ObjectId("ffffffffffffffffffffffff"), False, True,
    dt.datetime(1969, 12, 31, 23, 59, 59), dt.datetime(2024, 1, 1), Timestamp(5, 1),
    Timestamp(2**31 + 5, 0), MaxKey(),
]


def _fill_mixed(coll: pymongo.collection.Collection, per_type: int = 4) -> list:
    """MIXED_IDS plus many small numbers and strings, with padding so that
    slices cut between types."""
    ids = list(MIXED_IDS)
    ids += [i + 100 for i in range(per_type * 10)]
    ids += [f"s{i:04d}" for i in range(per_type * 10)]
    ids += [ObjectId() for _ in range(per_type * 10)]
    docs = [{"_id": v, "pad": "p" * (50 + 13 * (n % 7))} for n, v in enumerate(ids)]
    coll.insert_many(docs)
    return ids


def _ids_of(slices) -> list[bytes]:
    return [id_key(d) for s in slices for d in decode_slice(encode_slice(s, "x.y"))]


def _server_order(coll) -> list[bytes]:
    raw = coll.with_options(codec_options=RAW)
    return [id_key(d.raw) for d in raw.find().sort("_id", 1)]


def _bound(value) -> bytes:
    return bson.encode({"_id": value})


def test_full_range_reads_every_type_once_in_server_order(mongo_client, source, unique_db):
    coll = mongo_client[unique_db].mixed
    ids = _fill_mixed(coll)
    keys = _ids_of(read_range(source, f"{unique_db}.mixed", None, None, None, 1500))
    assert len(keys) == len(ids) == len(set(keys))
    assert keys == sorted(keys) == _server_order(coll)


def test_cut_points_of_any_type_partition_the_collection(mongo_client, source, unique_db):
    coll = mongo_client[unique_db].mixed
    _fill_mixed(coll)
    cuts = [None, _bound(-2.5), _bound(Int64(3)), _bound("b"), _bound({"x": 1, "y": 2}),
            _bound(ObjectId("ffffffffffffffffffffffff")), _bound(True), _bound(MaxKey()), None]
    seen = []
    for lo, hi in itertools.pairwise(cuts):
        seen += _ids_of(read_range(source, f"{unique_db}.mixed", lo, hi, None, 700))
    assert seen == _server_order(coll)
    # a $gt filter would have been type-bracketed: the ranges are not
    assert value_key(3) in seen and value_key("b") in seen


def test_planned_ranges_cover_the_collection_exactly_once(mongo_client, source, unique_db):
    coll = mongo_client[unique_db].mixed
    _fill_mixed(coll, per_type=40)
    info = list_namespaces(source, NamespaceFilter(include=[f"{unique_db}.mixed"]))[0]
    ranges = plan_ranges(source, info, slice_bytes=2000, max_ranges=6, slices_per_range=2)
    assert len(ranges) >= 3 and ranges[0].lo is None and ranges[-1].hi is None
    assert all(a.hi == b.lo for a, b in itertools.pairwise(ranges))
    assert [id_key(r.lo) for r in ranges[1:]] == sorted(id_key(r.lo) for r in ranges[1:])
    seen = []
    for r in ranges:
        part = _ids_of(read_range(source, info.ns, r.lo, r.hi, None, 2000))
        assert part, "a planned range is empty"
        seen += part
    assert seen == _server_order(coll)


def test_small_collections_and_views_are_not_split(mongo_client, source, unique_db):
    db = mongo_client[unique_db]
    db.small.insert_many([{"_id": i} for i in range(10)])
    db.command("create", "v", viewOn="small", pipeline=[])
    infos = {i.coll: i for i in list_namespaces(source, NamespaceFilter(include=[unique_db]))}
    assert plan_ranges(source, infos["small"], 10 * 1024 * 1024, 8) == [IdRange()]
    assert plan_ranges(source, infos["v"], 1, 8) == []


def test_slices_are_bounded_by_slice_bytes(mongo_client, source, unique_db):
    coll = mongo_client[unique_db].sized
    sizes = [200 + (i * 37) % 900 for i in range(600)]
    coll.insert_many([{"_id": i, "b": Binary(os.urandom(n))} for i, n in enumerate(sizes)])
    coll.insert_one({"_id": 10_000, "b": Binary(os.urandom(40_000))})   # larger than a slice
    limit = 16_000
    slices = list(read_range(source, f"{unique_db}.sized", None, None, None, limit))
    assert sum(s.count for s in slices) == 601
    big = [s for s in slices if s.nbytes > limit]
    assert len(big) == 1 and big[0].count == 1 and big[0] is slices[-1]
    for s, nxt in itertools.pairwise(slices[:-1]):
        assert s.nbytes <= limit
        assert s.nbytes + 1200 > limit          # full up to the next document
        assert s.nbytes == len(s.docs_raw) and s.last_key < nxt.first_key


def test_documents_are_stored_as_the_server_sent_them(mongo_client, source, unique_db):
    coll = mongo_client[unique_db].exact
    coll.insert_many([{"_id": i, "f": 1.0, "i": Int64(2), "d": Decimal128("1.10"),
                       "o": {"b": 1, "a": 2}} for i in range(50)])
    raw = [d.raw for d in coll.with_options(codec_options=RAW).find().sort("_id", 1)]
    (s,) = read_range(source, f"{unique_db}.exact", None, None, None, 1 << 20)
    assert s.docs_raw == b"".join(raw)
    assert list(decode_slice(encode_slice(s, "db.exact"))) == raw
    assert s.last_id_raw == raw_id(raw[-1]) and s.first_key == id_key(raw[0])


def test_resume_after_a_crash_loses_and_repeats_nothing(mongo_client, source, unique_db):
    coll = mongo_client[unique_db].r
    coll.insert_many([{"_id": i, "p": "x" * 100} for i in range(2000)])
    ns = f"{unique_db}.r"
    full = _ids_of(read_range(source, ns, None, None, None, 5000))
    for crash_after in (1, 7, 30):
        reader = read_range(source, ns, None, None, None, 5000)
        stored = [next(reader) for _ in range(crash_after)]
        reader.close()                           # the worker died here
        resumed = read_range(source, ns, None, None, stored[-1].last_id_raw, 5000)
        assert _ids_of(stored) + _ids_of(resumed) == full


def test_resume_point_deleted_meanwhile(mongo_client, source, unique_db):
    coll = mongo_client[unique_db].r
    coll.insert_many([{"_id": i} for i in range(100)])
    ns = f"{unique_db}.r"
    first = next(read_range(source, ns, None, None, None, 300))
    last_id = bson.decode(first.last_id_raw)["_id"]
    coll.delete_one({"_id": last_id})
    rest = _ids_of(read_range(source, ns, None, None, first.last_id_raw, 300))
    assert rest == [value_key(i) for i in range(last_id + 1, 100)]


def test_resume_within_a_range_stays_below_its_upper_bound(mongo_client, source, unique_db):
    mongo_client[unique_db].r.insert_many([{"_id": i} for i in range(100)])
    got = _ids_of(read_range(source, f"{unique_db}.r", _bound(10), _bound(50), _bound(40), 300))
    assert got == [value_key(i) for i in range(41, 50)]


@pytest.mark.sandbox_only
@pytest.mark.parametrize("fault", [
    {"error_code": 0, "close_connection": True},      # connection dropped
    {"error_code": 262},                              # ExceededTimeLimit
    {"error_code": 43},                               # CursorNotFound (cursor timed out)
])
def test_getmore_failures_are_retried_without_loss(sandbox, source, unique_db, fault):
    plain = pymongo.MongoClient(sandbox.uri)
    plain[unique_db].f.insert_many([{"_id": i, "p": "y" * 300} for i in range(3000)])
    ns = f"{unique_db}.f"
    expected = _ids_of(read_range(source, ns, None, None, None, 50_000))
    sandbox.fail_commands(["getMore"], times=3, **fault)
    got = _ids_of(read_range(source, ns, None, None, None, 50_000, backoff=FAST))
    assert got == expected
    assert sandbox.faults.times_entered == 3
    plain.close()


@pytest.mark.sandbox_only
def test_connections_dropped_mid_read_are_survived(sandbox, source, unique_db):
    plain = pymongo.MongoClient(sandbox.uri)
    plain[unique_db].f.insert_many([{"_id": i, "p": "y" * 500} for i in range(20_000)])
    ns = f"{unique_db}.f"
    drops = 0
    keys = []
    for s in read_range(source, ns, None, None, None, 200_000, backoff=FAST):
        keys += _ids_of([s])
        if drops < 4:
            sandbox.close_all_connections()
            drops += 1
    assert keys == [value_key(i) for i in range(20_000)]
    plain.close()


@pytest.mark.sandbox_only
def test_persistent_failure_gives_up_with_a_clear_error(sandbox, source, unique_db):
    pymongo.MongoClient(sandbox.uri)[unique_db].f.insert_many([{"_id": i} for i in range(500)])
    sandbox.faults.configure("alwaysOn", {"failCommands": ["getMore", "find"],
                                          "errorCode": 89})       # NetworkTimeout
    with pytest.raises(SourceUnavailable, match=r"reading .*\.f: gave up after 3 attempts"):
        list(read_range(source, f"{unique_db}.f", None, None, None, 1000,
                        backoff=Backoff(attempts=3, first_s=0.01)))
    sandbox.clear_faults()


@pytest.mark.sandbox_only
def test_a_non_transient_error_is_not_retried(sandbox, source, unique_db):
    pymongo.MongoClient(sandbox.uri)[unique_db].f.insert_many([{"_id": i} for i in range(5)])
    sandbox.fail_commands(["find"], error_code=2, times=1)     # BadValue
    with pytest.raises(SourceError, match=r"reading .*\.f: .*\(code 2\)") as exc:
        list(read_range(source, f"{unique_db}.f", None, None, None, 1000, backoff=FAST))
    assert not isinstance(exc.value, SourceUnavailable)


@pytest.mark.sandbox_only
def test_collection_dropped_while_read(sandbox, mongo_client, source, unique_db):
    coll = mongo_client[unique_db].gone
    coll.insert_many([{"_id": i, "p": "z" * 1000} for i in range(5000)])
    # the getMore after the first batch waits; meanwhile the collection is dropped
    sandbox.fail_commands(["getMore"], times=1, block_ms=500)
    timer = threading.Timer(0.1, coll.drop)
    timer.start()
    with pytest.raises(CollectionGone, match="dropped or renamed"):
        list(read_range(source, f"{unique_db}.gone", None, None, None, 100_000))
    timer.join()


def test_stored_slice_header_and_corruption(mongo_client, source, unique_db):
    mongo_client[unique_db].h.insert_many([{"_id": i} for i in range(30)])
    (s,) = read_range(source, f"{unique_db}.h", None, None, None, 1 << 20)
    data = encode_slice(s, f"{unique_db}.h", job=7, seq=0)
    header = slice_header(data)
    assert header["ns"] == f"{unique_db}.h" and header["count"] == 30 and header["job"] == 7
    assert bytes.fromhex(header["last_id"]) == s.last_id_raw
    assert len(data) < s.nbytes                    # zstd
    lying = container.pack(b"SLCE", dict(header, count=31), s.docs_raw)
    with pytest.raises(IntegrityError, match="31"):
        list(decode_slice(lying))
    cut = container.pack(b"SLCE", header, s.docs_raw[:-3])
    with pytest.raises(IntegrityError):
        list(decode_slice(cut))


def test_bad_bounds_are_refused(source) -> None:
    with pytest.raises(ValueError, match="bad _id bound"):
        list(read_range(source, "db.c", bson.encode({"x": 1}), None))
    with pytest.raises(ValueError, match="slice_bytes"):
        list(read_range(source, "db.c", None, None, None, 0))
