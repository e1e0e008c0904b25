"""find() with min()/max() index bounds: every _id type, no type bracketing.

Slicing relies on this to cover collections whose _id values mix types.
"""

from __future__ import annotations

import pymongo
import pytest
from bson import Decimal128, Int64, MaxKey, MinKey, ObjectId
from pymongo.errors import OperationFailure

IDS = [None, -3, 5, Int64(6), 5.5, Decimal128("7.25"), "a", "b", {"x": 1}, "c",
       ObjectId("00" * 12), ObjectId("ff" * 12), False, True]


@pytest.fixture
def coll(mongo_client, unique_db):
    c = mongo_client[unique_db]["mixed"]
    c.insert_many([{"_id": i, "v": n} for n, i in enumerate(IDS)])
    return c


def _ids(cursor) -> list:
    return [d["_id"] for d in cursor]


def test_full_bounds_cover_every_type_once_in_id_order(coll) -> None:
    got = _ids(coll.find().hint([("_id", 1)]).min([("_id", MinKey())]).max([("_id", MaxKey())]))
    assert len(got) == len(IDS)
    assert got == _ids(coll.find().sort("_id", 1))


def test_adjacent_ranges_partition_the_collection(coll) -> None:
    cuts = [MinKey(), 5.5, "b", ObjectId("ff" * 12), MaxKey()]
    seen = []
    for lo, hi in zip(cuts, cuts[1:]):
        seen += _ids(coll.find().hint([("_id", 1)]).min([("_id", lo)]).max([("_id", hi)]))
    assert seen == _ids(coll.find().sort("_id", 1))
    # min is inclusive, max exclusive, across types
    part = _ids(coll.find().hint([("_id", 1)]).min([("_id", 5.5)]).max([("_id", "b")]))
    assert part == [5.5, Int64(6), Decimal128("7.25"), "a"]


def test_min_max_with_a_filter(coll) -> None:
    got = _ids(coll.find({"v": {"$gte": 6}}).hint([("_id", 1)])
               .min([("_id", MinKey())]).max([("_id", "c")]))
    assert got == ["a", "b"]  # v >= 6 and _id below "c": objects sort after strings


def test_min_without_hint_is_refused(coll) -> None:
    with pytest.raises((OperationFailure, pymongo.errors.InvalidOperation)):
        list(coll.find().min([("_id", 1)]))


def test_minkey_maxkey_comparisons_are_not_type_bracketed(coll) -> None:
    assert coll.count_documents({"v": {"$gte": MinKey()}}) == len(IDS)
    assert coll.count_documents({"v": {"$lt": MaxKey()}}) == len(IDS)
    assert coll.count_documents({"_id": {"$gt": MinKey(), "$lt": MaxKey()}}) == len(IDS)


def test_sample_returns_distinct_existing_documents(coll) -> None:
    got = list(coll.aggregate([{"$sample": {"size": 5}}, {"$project": {"_id": 1}}]))
    assert len(got) == 5
    keys = [repr(d["_id"]) for d in got]
    assert len(set(keys)) == 5 and all(d["_id"] in IDS for d in got)
    assert len(list(coll.aggregate([{"$sample": {"size": 1000}}]))) == len(IDS)
