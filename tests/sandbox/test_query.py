"""Unit tests of the sandbox query engine (backupflows.sandbox.query).

The expected answers are what a MongoDB 7.0 server returns for the same
query (documented behaviour of the query language, src/mongo/db/matcher/).
"""

from __future__ import annotations

from typing import Any

import bson
import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.regex import Regex

from backupflows.sandbox.errors import CommandError
from backupflows.sandbox.query import (
    aggregate,
    distinct,
    match_details,
    matches,
    project,
    sort_docs,
)

DOC = {
    "_id": 1,
    "n": 5,
    "f": 2.5,
    "s": "Hello",
    "arr": [1, 5, 9],
    "sub": {"x": 1, "y": {"z": "deep"}},
    "objs": [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}],
    "nested": [[1, 2], [3]],
    "nul": None,
    "empty": [],
    "oid": ObjectId("5f0000000000000000000000"),
}


@pytest.mark.parametrize(("filt", "expected"), [
    ({}, True),
    ({"n": 5}, True), ({"n": 5.0}, True), ({"n": Int64(5)}, True),
    ({"n": Decimal128("5")}, True), ({"n": "5"}, False),
    ({"sub.x": 1}, True), ({"sub.y.z": "deep"}, True), ({"sub": {"x": 1, "y": {"z": "deep"}}}, True),
    ({"sub": {"y": {"z": "deep"}, "x": 1}}, False),  # whole sub-documents compare in order
    # arrays: the array itself or any element
    ({"arr": 5}, True), ({"arr": [1, 5, 9]}, True), ({"arr": [1, 5]}, False),
    ({"arr.1": 5}, True), ({"arr.0": 5}, False),
    ({"objs.k": 2}, True), ({"objs.v": "c"}, False), ({"objs.1.v": "b"}, True),
    ({"nested": [3]}, True), ({"nested": 3}, False),
    # null matches null and missing, not []
    ({"nul": None}, True), ({"missing": None}, True), ({"n": None}, False),
    ({"sub.missing": None}, True), ({"objs.missing": None}, True), ({"empty": None}, False),
    ({"missing": {"$ne": None}}, False), ({"n": {"$ne": None}}, True),
    ({"n": {"$eq": 5}}, True),
    ({"n": {"$ne": 5}}, False), ({"arr": {"$ne": 5}}, False), ({"arr": {"$ne": 4}}, True),
])
def test_equality_and_paths(filt: dict, expected: bool) -> None:
    assert matches(DOC, filt) is expected


@pytest.mark.parametrize(("filt", "expected"), [
    ({"n": {"$gt": 4}}, True), ({"n": {"$gt": 5}}, False), ({"n": {"$gte": 5}}, True),
    ({"n": {"$lt": 5.5}}, True), ({"n": {"$lte": 4}}, False),
    # type bracketing: numbers never compare with strings
    ({"n": {"$lt": "a"}}, False), ({"s": {"$gt": 1}}, False), ({"s": {"$gt": "A"}}, True),
    # independent operators on an array ({a: [1, 5, 9]} has an element > 6 and one < 2)
    ({"arr": {"$gt": 6, "$lt": 2}}, True),
    ({"arr": {"$elemMatch": {"$gt": 6, "$lt": 2}}}, False),
    ({"arr": {"$elemMatch": {"$gt": 4, "$lt": 6}}}, True),
    ({"objs": {"$elemMatch": {"k": 2, "v": "b"}}}, True),
    ({"objs": {"$elemMatch": {"k": 2, "v": "a"}}}, False),
    ({"nul": {"$gte": None}}, True), ({"missing": {"$lte": None}}, True),
    ({"nul": {"$gt": None}}, False),
    ({"oid": {"$gt": ObjectId("4f0000000000000000000000")}}, True),
])
def test_comparisons(filt: dict, expected: bool) -> None:
    assert matches(DOC, filt) is expected


@pytest.mark.parametrize(("filt", "expected"), [
    ({"n": {"$in": [1, 5]}}, True), ({"n": {"$in": []}}, False),
    ({"arr": {"$in": [9, 10]}}, True), ({"missing": {"$in": [None]}}, True),
    ({"s": {"$in": [Regex("^h", "i")]}}, True),
    ({"n": {"$nin": [1, 5]}}, False), ({"arr": {"$nin": [2, 3]}}, True),
    ({"n": {"$exists": True}}, True), ({"missing": {"$exists": False}}, True),
    ({"objs.k": {"$exists": True}}, True), ({"arr.x": {"$exists": True}}, False),
    ({"nul": {"$exists": True}}, True),
    ({"n": {"$type": "int"}}, True), ({"n": {"$type": "number"}}, True),
    ({"f": {"$type": 1}}, True), ({"arr": {"$type": "array"}}, True),
    ({"arr": {"$type": "int"}}, True), ({"s": {"$type": ["int", "string"]}}, True),
    ({"nul": {"$type": "null"}}, True), ({"missing": {"$type": "null"}}, False),
    ({"s": {"$regex": "^hel", "$options": "i"}}, True), ({"s": {"$regex": "^hel"}}, False),
    ({"s": Regex("llo$")}, True), ({"n": {"$regex": "5"}}, False),
    ({"s": {"$regex": Regex("^hel", "i")}}, True), ({"s": Regex("^HEL", "i")}, True),
    ({"n": {"$not": {"$gt": 6}}}, True), ({"n": {"$not": {"$gt": 4}}}, False),
    ({"s": {"$not": Regex("^x")}}, True),
    ({"arr": {"$size": 3}}, True), ({"arr": {"$size": 2}}, False), ({"n": {"$size": 1}}, False),
    ({"arr": {"$all": [1, 9]}}, True), ({"arr": {"$all": [1, 2]}}, False),
    ({"arr": {"$all": []}}, False),
    ({"objs": {"$all": [{"$elemMatch": {"k": 1}}, {"$elemMatch": {"v": "b"}}]}}, True),
    ({"n": {"$mod": [2, 1]}}, True), ({"f": {"$mod": [2, 0]}}, True), ({"n": {"$mod": [5, 1]}}, False),
    ({"$and": [{"n": 5}, {"s": "Hello"}]}, True), ({"$or": [{"n": 1}, {"s": "Hello"}]}, True),
    ({"$nor": [{"n": 1}, {"s": "x"}]}, True), ({"$nor": [{"n": 5}]}, False),
    ({"$expr": {"$gt": ["$n", "$f"]}}, True), ({"$expr": {"$eq": ["$sub.x", 2]}}, False),
    ({"$comment": "ignored", "n": 5}, True),
])
def test_operators(filt: dict, expected: bool) -> None:
    assert matches(DOC, filt) is expected


@pytest.mark.parametrize(("filt", "code"), [
    ({"n": {"$bogus": 1}}, 2), ({"$bogus": 1}, 2), ({"$and": []}, 2), ({"$or": [1]}, 2),
    ({"n": {"$in": 5}}, 2), ({"n": {"$size": -1}}, 2), ({"n": {"$mod": [0, 1]}}, 2),
    ({"n": {"$type": "bogus"}}, 2), ({"n": {"$not": 5}}, 2), ({"n": {"$options": "i"}}, 2),
    ({"$expr": {"$bogus": 1}}, 168),
])
def test_filter_errors(filt: dict, code: int) -> None:
    with pytest.raises(CommandError) as info:
        matches(DOC, filt)
    assert info.value.code == code


def test_unknown_operator_message() -> None:
    with pytest.raises(CommandError, match=r"unknown operator: \$x"):
        matches(DOC, {"n": {"$x": 1}})


def test_match_details_gives_the_matched_array_index() -> None:
    assert match_details(DOC, {"objs.k": 2}) == (True, "1")
    assert match_details(DOC, {"arr": 9}) == (True, "2")
    assert match_details(DOC, {"objs": {"$elemMatch": {"v": "b"}}}) == (True, "1")
    assert match_details(DOC, {"n": 5}) == (True, None)


# ----------------------------------------------------------------- projection

@pytest.mark.parametrize(("projection", "expected"), [
    (None, DOC),
    ({"n": 1, "s": 1}, {"_id": 1, "n": 5, "s": "Hello"}),
    ({"s": 1, "n": 1, "_id": 0}, {"n": 5, "s": "Hello"}),          # input order, not spec order
    ({"sub.y.z": 1}, {"_id": 1, "sub": {"y": {"z": "deep"}}}),
    ({"objs.v": 1}, {"_id": 1, "objs": [{"v": "a"}, {"v": "b"}]}),
    ({"sub": {"x": 1}}, {"_id": 1, "sub": {"x": 1}}),
    ({"arr": {"$slice": 2}, "n": 1}, {"_id": 1, "n": 5, "arr": [1, 5]}),
    ({"arr": {"$slice": -1}, "_id": 1}, {"_id": 1, "arr": [9]}),
    ({"arr": {"$slice": [1, 1]}, "_id": 1}, {"_id": 1, "arr": [5]}),
    ({"objs": {"$elemMatch": {"k": 2}}, "_id": 1}, {"_id": 1, "objs": [{"k": 2, "v": "b"}]}),
    ({"total": {"$add": ["$n", 1]}, "n": 1}, {"_id": 1, "n": 5, "total": 6}),
])
def test_projection_inclusion(projection: Any, expected: dict) -> None:
    assert bson.encode(project(DOC, projection)) == bson.encode(expected)


def test_projection_exclusion_keeps_order() -> None:
    result = project(DOC, {"arr": 0, "sub.y": 0, "objs.k": 0, "nested": 0, "oid": 0, "empty": 0})
    assert bson.encode(result) == bson.encode({
        "_id": 1, "n": 5, "f": 2.5, "s": "Hello", "sub": {"x": 1},
        "objs": [{"v": "a"}, {"v": "b"}], "nul": None})
    sliced = project(DOC, {"arr": {"$slice": 1}})
    assert sliced["arr"] == [1] and list(sliced) == list(DOC)


def test_projection_errors() -> None:
    with pytest.raises(CommandError) as info:
        project(DOC, {"n": 1, "s": 0})
    assert info.value.code == 31254
    with pytest.raises(CommandError) as info:
        project(DOC, {"n": 0, "s": 1})
    assert info.value.code == 31253
    with pytest.raises(CommandError):
        project(DOC, {"a": 1, "a.b": 1})


def test_projection_does_not_mutate() -> None:
    doc = {"_id": 1, "a": {"b": [1, 2]}}
    out = project(doc, {"a.b": 1})
    out["a"]["b"].append(3)
    assert doc == {"_id": 1, "a": {"b": [1, 2]}}


# ----------------------------------------------------------------- sort

def test_sort_multi_key_mixed_directions_and_stability() -> None:
    docs = [{"i": 0, "a": 1, "b": "x"}, {"i": 1, "a": 2, "b": "y"}, {"i": 2, "a": 1, "b": "z"},
            {"i": 3, "a": 2, "b": "y"}, {"i": 4, "a": 1.0, "b": "x"}]
    out = sort_docs(docs, {"a": -1, "b": 1})
    assert [d["i"] for d in out] == [1, 3, 0, 4, 2]


def test_sort_type_order_missing_and_arrays() -> None:
    docs = [{"i": "str", "a": "s"}, {"i": "num", "a": 3}, {"i": "missing"}, {"i": "null", "a": None},
            {"i": "arr", "a": [5, 0]}, {"i": "empty", "a": []}, {"i": "oid", "a": ObjectId()},
            {"i": "obj", "a": {"x": 1}}]
    ascending = [d["i"] for d in sort_docs(docs, {"a": 1})]
    assert ascending == ["empty", "missing", "null", "arr", "num", "str", "obj", "oid"]
    descending = [d["i"] for d in sort_docs(docs, {"a": -1})]
    assert descending == ["oid", "obj", "str", "arr", "num", "missing", "null", "empty"]


def test_sort_on_nested_array_paths() -> None:
    docs = [{"i": 0, "a": [{"b": 5}, {"b": 1}]}, {"i": 1, "a": [{"b": 3}]}]
    assert [d["i"] for d in sort_docs(docs, {"a.b": 1})] == [0, 1]
    assert [d["i"] for d in sort_docs(docs, {"a.b": -1})] == [0, 1]


def test_sort_errors() -> None:
    with pytest.raises(CommandError):
        sort_docs([{}], {"a": 2})


# ----------------------------------------------------------------- aggregate

PEOPLE = [
    {"_id": 1, "team": "a", "age": 30, "tags": ["x", "y"]},
    {"_id": 2, "team": "b", "age": 20, "tags": ["y"]},
    {"_id": 3, "team": "a", "age": 40, "tags": []},
    {"_id": 4, "team": None, "age": 50},
]


def test_aggregate_match_sort_skip_limit_project() -> None:
    out = aggregate(PEOPLE, [{"$match": {"age": {"$gte": 25}}}, {"$sort": {"age": -1}},
                             {"$skip": 1}, {"$limit": 2}, {"$project": {"age": 1, "_id": 0}}])
    assert out == [{"age": 40}, {"age": 30}]


def test_aggregate_group() -> None:
    out = aggregate(PEOPLE, [
        {"$group": {"_id": "$team", "n": {"$sum": 1}, "total": {"$sum": "$age"},
                    "oldest": {"$max": "$age"}, "youngest": {"$min": "$age"},
                    "first": {"$first": "$_id"}, "last": {"$last": "$_id"},
                    "avg": {"$avg": "$age"}, "ids": {"$push": "$_id"}, "c": {"$count": {}}}},
        {"$sort": {"_id": 1}}])
    assert out == [
        {"_id": None, "n": 1, "total": 50, "oldest": 50, "youngest": 50, "first": 4, "last": 4,
         "avg": 50.0, "ids": [4], "c": 1},
        {"_id": "a", "n": 2, "total": 70, "oldest": 40, "youngest": 30, "first": 1, "last": 3,
         "avg": 35.0, "ids": [1, 3], "c": 2},
        {"_id": "b", "n": 1, "total": 20, "oldest": 20, "youngest": 20, "first": 2, "last": 2,
         "avg": 20.0, "ids": [2], "c": 1},
    ]
    assert aggregate(PEOPLE, [{"$group": {"_id": None, "n": {"$sum": 1}}}]) == \
        [{"_id": None, "n": 4}]
    by_doc = aggregate(PEOPLE[:2], [{"$group": {"_id": {"t": "$team"}, "s": {"$addToSet": "$age"}}}])
    assert by_doc == [{"_id": {"t": "a"}, "s": [30]}, {"_id": {"t": "b"}, "s": [20]}]


def test_aggregate_count_set_unset_unwind() -> None:
    assert aggregate(PEOPLE, [{"$match": {"team": "a"}}, {"$count": "n"}]) == [{"n": 2}]
    assert aggregate(PEOPLE, [{"$match": {"team": "zz"}}, {"$count": "n"}]) == []
    out = aggregate(PEOPLE[:1], [{"$set": {"older": {"$add": ["$age", 1]}}},
                                 {"$unset": ["tags", "team"]}])
    assert out == [{"_id": 1, "age": 30, "older": 31}]
    unwound = aggregate(PEOPLE, [{"$unwind": "$tags"}, {"$project": {"tags": 1}}])
    assert unwound == [{"_id": 1, "tags": "x"}, {"_id": 1, "tags": "y"}, {"_id": 2, "tags": "y"}]


def test_aggregate_add_fields_merges_nested_objects() -> None:
    out = aggregate([{"_id": 1, "a": {"b": 1}}], [{"$addFields": {"a": {"c": 2}, "d.e": 3}}])
    assert out == [{"_id": 1, "a": {"b": 1, "c": 2}, "d": {"e": 3}}]


def test_aggregate_errors() -> None:
    for pipeline, code in [([{"$bogus": {}}], 40324), ([{"$match": {}, "$sort": {}}], 40323),
                           ([{"$limit": 0}], 15958), ([{"$skip": -1}], 15956),
                           ([{"$group": {"n": {"$sum": 1}}}], 15955),
                           ([{"$group": {"_id": None, "n": {"$bogus": 1}}}], 15952)]:
        with pytest.raises(CommandError) as info:
            aggregate(PEOPLE, pipeline)
        assert info.value.code == code


def test_aggregate_does_not_mutate_input() -> None:
    docs = [{"_id": 1, "a": {"b": 1}}]
    aggregate(docs, [{"$set": {"a.c": 2}}])
    assert docs == [{"_id": 1, "a": {"b": 1}}]


# ----------------------------------------------------------------- distinct

def test_distinct_unwinds_arrays_and_dedupes_numbers() -> None:
    docs = [{"a": [1, 2, [3]]}, {"a": 1.0}, {"a": "x"}, {"a": None}, {}, {"a": {"b": 1}},
            {"a": Int64(2)}]
    out = distinct(docs, "a")
    assert out == [None, 1, 2, "x", {"b": 1}, [3]]
    assert distinct([{"a": [{"b": 1}, {"b": 2}]}, {"a": {"b": 2}}], "a.b") == [1, 2]
