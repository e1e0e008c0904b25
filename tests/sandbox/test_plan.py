"""Query planning: _id/ts range lookups agree with the matcher and never decode."""

from __future__ import annotations

import datetime as dt
import random

import pymongo
import pytest
from bson import ObjectId
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.raw_bson import RawBSONDocument

from backupflows.bsonorder import value_key
from backupflows.sandbox import cursors, plan
from backupflows.sandbox.query import matches
from backupflows.sandbox.storage import Collection, decode, encode

pytestmark = pytest.mark.sandbox_only

IDS = [None, -3, 0, 1, 1.5, Int64(2), 7, "", "a", "b", "ba", {"x": 1}, {"x": 2},
       b"\x01", ObjectId("000000000000000000000001"), ObjectId("ffffffffffffffffffffffff"),
       False, True, dt.datetime(2020, 1, 1), MinKey(), MaxKey()]
BOUNDS = [v for v in IDS if not isinstance(v, bytes)]


def _collection() -> Collection:
    coll = Collection("p", "c")
    for i, value in enumerate(IDS):
        coll.insert(encode({"_id": value, "i": i}))
    return coll


def _planned(coll: Collection, filter_: dict) -> list[int]:
    return sorted(decode(raw)["i"] for _rid, raw in plan.iter_matching(coll, filter_))


def _compare(value, op: str, rhs) -> bool:
    """The server's comparison (ComparisonMatchExpressionBase): values of
    different canonical types never match, except that every value is above
    MinKey and below MaxKey."""
    kv, kr = value_key(value), value_key(rhs)
    if kv[0] != kr[0]:
        if isinstance(rhs, MinKey):
            return op in ("$gt", "$gte")
        if isinstance(rhs, MaxKey):
            return op in ("$lt", "$lte")
        return False
    return {"$gt": kv > kr, "$gte": kv >= kr, "$lt": kv < kr, "$lte": kv <= kr,
            "$eq": kv == kr}[op]


def _oracle(doc: dict, cond) -> bool:
    if not isinstance(cond, dict) or not all(k.startswith("$") for k in cond):
        return _compare(doc["_id"], "$eq", cond)
    return all(any(_compare(doc["_id"], "$eq", v) for v in rhs) if op == "$in"
               else _compare(doc["_id"], op, rhs) for op, rhs in cond.items())


def _brute(coll: Collection, filter_: dict) -> list[int]:
    docs = list(map(decode, coll.records.values()))
    return sorted(d["i"] for d in docs if _oracle(d, filter_["_id"]))


def test_id_ranges_match_the_matcher():
    coll = _collection()
    rng = random.Random(7)
    ops = ["$gt", "$gte", "$lt", "$lte", "$eq"]
    for _ in range(400):
        cond = {op: rng.choice(BOUNDS) for op in rng.sample(ops, rng.randint(1, 2))}
        assert _planned(coll, {"_id": cond}) == _brute(coll, {"_id": cond}), cond
    for _ in range(50):
        values = rng.sample(BOUNDS, 3)
        assert _planned(coll, {"_id": {"$in": values}}) == _brute(coll, {"_id": {"$in": values}})
        assert _planned(coll, {"_id": values[0]}) == _brute(coll, {"_id": values[0]})


def test_id_bounds_are_type_bracketed():
    coll = _collection()
    numbers = _planned(coll, {"_id": {"$gte": -100}})
    assert numbers == [1, 2, 3, 4, 5, 6]
    assert _planned(coll, {"_id": {"$gte": MinKey(), "$lt": ObjectId("f" * 24)}}) == \
        _brute(coll, {"_id": {"$gte": MinKey(), "$lt": ObjectId("f" * 24)}})
    everything = _planned(coll, {"_id": {"$gte": MinKey(), "$lte": MaxKey()}})
    assert len(everything) == len(IDS)


def test_residual_filters_still_apply():
    coll = _collection()
    assert _planned(coll, {"_id": {"$gte": 0}, "i": {"$gt": 3}}) == [4, 5, 6]
    assert _planned(coll, {"_id": {"$lt": 100}, "i": {"$in": [1, 2]}}) == \
        sorted(d["i"] for d in map(decode, coll.records.values())
               if matches(d, {"_id": {"$lt": 100}, "i": {"$in": [1, 2]}}))


def test_id_range_reads_never_decode(sandbox, monkeypatch):
    with pymongo.MongoClient(sandbox.uri) as client:
        client.p.c.insert_many([{"_id": i, "v": "x" * i} for i in range(300)])
        calls: list[int] = []

        def spy(raw: bytes) -> dict:
            calls.append(1)
            return decode(raw)

        monkeypatch.setattr(cursors, "decode", spy)
        monkeypatch.setattr(plan, "decode", spy)
        raw = client.p.get_collection("c", codec_options=CodecOptions(
            document_class=RawBSONDocument))
        by_id = list(raw.find({"_id": {"$gte": 10, "$lt": 250}}).sort("_id", -1)
                     .batch_size(50))
        natural = list(raw.find({"_id": {"$gte": 10, "$lt": 250}}).sort("$natural", 1))
        slices = list(raw.find({"_id": {"$gte": 100}}, batch_size=7).limit(20))
        oplog = client.local.get_collection("oplog.rs", codec_options=raw.codec_options)
        first_ts = oplog.find_one({"o._id": 200})["ts"]
        calls.clear()
        tail = list(oplog.find({"ts": {"$gte": first_ts}}).sort("$natural", 1))
    assert [d["_id"] for d in by_id] == list(range(249, 9, -1))
    assert [d["_id"] for d in natural] == list(range(10, 250))
    assert [d["_id"] for d in slices] == list(range(100, 120))
    assert len(tail) == 100
    assert calls == []
