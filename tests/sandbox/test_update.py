"""Unit tests of the sandbox update engine (backupflows.sandbox.update).

Expected documents and oplog entries are, wherever the server has one, the
expectation of the MongoDB server's own unit test for the same case (file
named in the comment, src/mongo/db/update/ of mongodb/mongo); the others follow
the server code the engine reproduces.  Documents and diffs are compared as
BSON bytes, so field order and BSON types (int32/int64/double) count.
"""

from __future__ import annotations

import datetime
from typing import Any

import bson
import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from backupflows.sandbox.errors import CommandError
from backupflows.sandbox.update import apply_update, parse_operator_update, upsert_document
from backupflows.sandbox.update_log import V2LogBuilder
from backupflows.sandbox.update_tree import ApplyContext, root_ref


def same(a: Any, b: Any) -> bool:
    """Equal as BSON: same fields, same order, same types."""
    return bson.encode({"v": a}) == bson.encode({"v": b})


def check(doc: dict, update: Any, new_doc: dict, oplog_o: dict | None, **kwargs: Any) -> None:
    outcome = apply_update(doc, update, **kwargs)
    assert same(outcome.new_doc, new_doc), outcome.new_doc
    assert same(outcome.oplog_o, oplog_o), outcome.oplog_o


def diff(d: dict) -> dict:
    return {"$v": 2, "diff": d}


def error(doc: dict, update: Any, code: int, message: str | None = None, **kwargs: Any) -> None:
    with pytest.raises(CommandError) as info:
        apply_update(doc, update, **kwargs)
    assert info.value.code == code, info.value.message
    if message is not None:
        assert info.value.message == message


# ----------------------------------------------------------------- the issue's examples

def test_issue_examples() -> None:
    check({"_id": 1, "a": 2}, {"$inc": {"a": 1}}, {"_id": 1, "a": 3}, diff({"u": {"a": 3}}))
    check({"_id": 1, "a": [2]}, {"$inc": {"a.0": 1}}, {"_id": 1, "a": [3]},
          diff({"sa": {"a": True, "u0": 3}}))


# ----------------------------------------------------------------- $set (set_node_test.cpp,
# update_object_node_test.cpp)

@pytest.mark.parametrize(("doc", "update", "new_doc", "o"), [
    # ApplyCreateField / ApplyExistingField
    ({"a": 5}, {"$set": {"b": 6}}, {"a": 5, "b": 6}, diff({"i": {"b": 6}})),
    ({"a": 5}, {"$set": {"a": 6}}, {"a": 6}, diff({"u": {"a": 6}})),
    # ApplyExistingAndNonexistingFields: existing fields in place, new ones appended in order
    ({"a": 0, "c": 0}, {"$set": {"a": 5, "b": 6, "c": 7, "d": 8}},
     {"a": 5, "c": 7, "b": 6, "d": 8}, diff({"u": {"a": 5, "c": 7}, "i": {"b": 6, "d": 8}})),
    # ChildrenShouldBeAppliedInAlphabeticalOrder
    ({"z": 0, "a": 0}, {"$set": {"a": 5, "d": 6, "c": 7, "b": 8, "z": 9}},
     {"z": 9, "a": 5, "b": 8, "c": 7, "d": 6},
     diff({"u": {"a": 5, "z": 9}, "i": {"b": 8, "c": 7, "d": 6}})),
    # ApplyExistingNestedPaths
    ({"a": {"b": 5, "c": 5}, "b": {"d": 5, "e": 5}},
     {"$set": {"a.b": 6, "a.c": 7, "b.d": 8, "b.e": 9}},
     {"a": {"b": 6, "c": 7}, "b": {"d": 8, "e": 9}},
     diff({"sa": {"u": {"b": 6, "c": 7}}, "sb": {"u": {"d": 8, "e": 9}}})),
    # ApplyCreateNestedPaths / ApplyCreateDeeplyNestedPaths
    ({"z": 0}, {"$set": {"a.b": 6, "a.c": 7, "b.d": 8, "b.e": 9}},
     {"z": 0, "a": {"b": 6, "c": 7}, "b": {"d": 8, "e": 9}},
     diff({"i": {"a": {"b": 6, "c": 7}, "b": {"d": 8, "e": 9}}})),
    ({"z": 0}, {"$set": {"a.b.c.d": 6, "a.b.c.e": 7, "a.f": 8}},
     {"z": 0, "a": {"b": {"c": {"d": 6, "e": 7}}, "f": 8}},
     diff({"i": {"a": {"b": {"c": {"d": 6, "e": 7}}, "f": 8}}})),
    # ApplySomeChildrenNoops
    ({"a": 5, "b": 0, "c": 7}, {"$set": {"a": 5, "b": 6, "c": 7}},
     {"a": 5, "b": 6, "c": 7}, diff({"u": {"b": 6}})),
    # ApplyToArrayByIndexWithLeadingZero
    ({"a": [0, 0, 0, 0, 0]}, {"$set": {"a.02": 2}}, {"a": [0, 0, 2, 0, 0]},
     diff({"sa": {"a": True, "u2": 2}})),
    # ApplyMultipleArrayUpdates: padding is not logged
    ({"a": []}, {"$set": {"a.2": 2, "a.10": 10}},
     {"a": [None, None, 2, None, None, None, None, None, None, None, 10]},
     diff({"sa": {"a": True, "u2": 2, "u10": 10}})),
    # ApplyMultipleUpdatesToDocumentInArray
    ({"a": []}, {"$set": {"a.2.b": 1, "a.2.c": 1}}, {"a": [None, None, {"b": 1, "c": 1}]},
     diff({"sa": {"a": True, "u2": {"b": 1, "c": 1}}})),
    # a new field inside an existing sub-document
    ({"_id": 1, "a": {"x": 1}}, {"$set": {"a.y.z": 2}}, {"_id": 1, "a": {"x": 1, "y": {"z": 2}}},
     diff({"sa": {"i": {"y": {"z": 2}}}})),
    # an existing array element that is a document
    ({"_id": 1, "a": [{"b": 1}, {"b": 2}]}, {"$set": {"a.1.b": 3, "a.1.c": 4}},
     {"_id": 1, "a": [{"b": 1}, {"b": 3, "c": 4}]},
     diff({"sa": {"a": True, "s1": {"u": {"b": 3}, "i": {"c": 4}}}})),
    # a numeric field name in a sub-document is a field, not an index
    ({"_id": 1, "a": {"0": 1}}, {"$set": {"a.0": 2}}, {"_id": 1, "a": {"0": 2}},
     diff({"sa": {"u": {"0": 2}}})),
    # replacing a sub-document value whole
    ({"_id": 1, "a": {"b": 1}}, {"$set": {"a": {"c": 1}}}, {"_id": 1, "a": {"c": 1}},
     diff({"u": {"a": {"c": 1}}})),
])
def test_set(doc: dict, update: dict, new_doc: dict, o: dict) -> None:
    check(doc, update, new_doc, o)


def test_set_noop_needs_binary_equality() -> None:
    # SetNode::updateExistingElement: binaryEqualValues, so 1 -> 1.0 is a change.
    check({"_id": 1, "a": 1}, {"$set": {"a": 1}}, {"_id": 1, "a": 1}, None)
    check({"_id": 1, "a": 1}, {"$set": {"a": 1.0}}, {"_id": 1, "a": 1.0}, diff({"u": {"a": 1.0}}))
    check({"_id": 1, "a": 1}, {"$set": {"a": Int64(1)}}, {"_id": 1, "a": Int64(1)},
          diff({"u": {"a": Int64(1)}}))
    check({"_id": 1, "a": {"x": 1, "y": 2}}, {"$set": {"a": {"y": 2, "x": 1}}},
          {"_id": 1, "a": {"y": 2, "x": 1}}, diff({"u": {"a": {"y": 2, "x": 1}}}))


def test_set_errors() -> None:
    # ApplyBlockingElement / ApplyUpdateToNonViablePathInArray (update_object_node_test.cpp)
    error({"a": 0}, {"$set": {"a.b": 5}}, 28, "Cannot create field 'b' in element {a: 0}")
    error({"a": [{"b": 1}, {"b": 2}]}, {"$set": {"a.b": 3}}, 28,
          "Cannot create field 'b' in element {a: [ { b: 1 }, { b: 2 } ]}")
    error({"_id": 1}, {"$set": {"": 1}}, 56, "An empty update path is not valid.")
    error({"_id": 1}, {"$set": {"a..b": 1}}, 56,
          "The update path 'a..b' contains an empty field name, which is not allowed.")
    error({"_id": 1}, {"$set": {"a": 1}, "$inc": {"a": 1}}, 40,
          "Updating the path 'a' would create a conflict at 'a'")
    error({"_id": 1}, {"$set": {"a": 1, "a.b": 2}}, 40,
          "Updating the path 'a.b' would create a conflict at 'a'")
    error({"_id": 1}, {"$set": {"a.b": 1}, "$unset": {"a": 1}}, 40)
    error({"_id": 1}, {"$foo": {"a": 1}}, 9, "Unknown modifier: $foo. Expected a valid update "
          "modifier or pipeline-style update specified as an array")
    error({"_id": 1}, {"$set": 5}, 9)


def test_set_on_id() -> None:
    error({"_id": 1, "a": 1}, {"$set": {"_id": 2}}, 66)
    error({"_id": {"x": 1}}, {"$set": {"_id.x": 2}}, 66)
    error({"_id": {"x": 1}}, {"$set": {"_id.y": 2}}, 66)
    error({"_id": 1}, {"$unset": {"_id": 1}}, 66)
    check({"_id": 1, "a": 1}, {"$set": {"_id": 1, "a": 2}}, {"_id": 1, "a": 2},
          diff({"u": {"a": 2}}))


def test_empty_modifier_is_a_noop() -> None:
    check({"_id": 1, "a": 1}, {"$set": {}}, {"_id": 1, "a": 1}, None)


def test_input_document_is_not_mutated() -> None:
    doc = {"_id": 1, "a": {"b": [1, 2]}, "c": 1}
    before = bson.encode(doc)
    apply_update(doc, {"$push": {"a.b": 3}, "$unset": {"c": 1}, "$set": {"a.d": 1}})
    assert bson.encode(doc) == before


# ----------------------------------------------------------------- $unset (unset_node_test.cpp)

@pytest.mark.parametrize(("doc", "update", "new_doc", "o"), [
    ({"a": 5}, {"$unset": {"a": 1}}, {}, diff({"d": {"a": False}})),
    ({"a": {"b": 1, "c": 2}}, {"$unset": {"a.b": 1}}, {"a": {"c": 2}},
     diff({"sa": {"d": {"b": False}}})),
    # an array element becomes null
    ({"a": [0, 1, 2]}, {"$unset": {"a.1": 1}}, {"a": [0, None, 2]},
     diff({"sa": {"a": True, "u1": None}})),
    ({"a": 1, "b": 2, "c": 3}, {"$unset": {"c": 1, "a": 1}}, {"b": 2},
     diff({"d": {"a": False, "c": False}})),
])
def test_unset(doc: dict, update: dict, new_doc: dict, o: dict) -> None:
    check(doc, update, new_doc, o)


@pytest.mark.parametrize(("doc", "path"), [
    ({"a": 1}, "b"), ({"a": 1}, "a.b"), ({"a": [1]}, "a.x"), ({"a": [1]}, "a.5"),
])
def test_unset_of_a_missing_or_non_viable_path_is_a_noop(doc: dict, path: str) -> None:
    check(doc, {"$unset": {path: ""}}, doc, None)


# ----------------------------------------------------------------- $inc / $mul
# (arithmetic_node_test.cpp, safe_num.cpp)

@pytest.mark.parametrize(("before", "op", "arg", "after"), [
    (1, "$inc", 2, 3),
    (2 ** 31 - 1, "$inc", 1, Int64(2 ** 31)),       # int32 overflow widens to int64
    (1, "$inc", Int64(1), Int64(2)),
    (1, "$inc", 0.5, 1.5),
    (Int64(5), "$inc", 1, Int64(6)),
    (1.5, "$inc", 1, 2.5),
    (Decimal128("1.1"), "$inc", 1, Decimal128("2.1")),
    (3, "$mul", 2, 6),
    (3, "$mul", 2.0, 6.0),
    (2 ** 20, "$mul", 2 ** 20, Int64(2 ** 40)),
])
def test_arithmetic_types(before: Any, op: str, arg: Any, after: Any) -> None:
    check({"_id": 1, "a": before}, {op: {"a": arg}}, {"_id": 1, "a": after},
          diff({"u": {"a": after}}))


@pytest.mark.parametrize(("before", "op", "arg"), [
    (2, "$inc", 0), (Int64(2), "$inc", 0), (2.5, "$inc", 0), (2, "$mul", 1),
    (Decimal128("1.0"), "$inc", Decimal128("0")),
])
def test_arithmetic_noop_when_identical(before: Any, op: str, arg: Any) -> None:
    check({"_id": 1, "a": before}, {op: {"a": arg}}, {"_id": 1, "a": before}, None)


def test_arithmetic_type_change_is_not_a_noop() -> None:
    # $inc by 0.0 turns an int into a double: not identical (SafeNum::isIdentical).
    check({"_id": 1, "a": 2}, {"$inc": {"a": 0.0}}, {"_id": 1, "a": 2.0},
          diff({"u": {"a": 2.0}}))


def test_arithmetic_creates_missing_fields() -> None:
    check({"_id": 1}, {"$inc": {"a": 5}}, {"_id": 1, "a": 5}, diff({"i": {"a": 5}}))
    # $mul on a missing field creates 0 of the argument's type
    check({"_id": 1}, {"$mul": {"a": Int64(5)}}, {"_id": 1, "a": Int64(0)},
          diff({"i": {"a": Int64(0)}}))
    check({"_id": 1}, {"$mul": {"a.b": 2.5}}, {"_id": 1, "a": {"b": 0.0}},
          diff({"i": {"a": {"b": 0.0}}}))


def test_arithmetic_errors() -> None:
    error({"_id": 1, "a": "x"}, {"$inc": {"a": 1}}, 14, "Cannot apply $inc to a value of "
          "non-numeric type. {_id: 1} has the field 'a' of non-numeric type string")
    error({"_id": 1}, {"$inc": {"a": "1"}}, 14,
          'Cannot increment with non-numeric argument: {a: "1"}')
    error({"_id": 1}, {"$mul": {"a": None}}, 14)
    error({"_id": 1, "a": Int64(2 ** 63 - 1)}, {"$inc": {"a": 1}}, 2)


# ----------------------------------------------------------------- $min / $max (compare_node_test.cpp)

def test_min_max() -> None:
    check({"_id": 1, "a": 5}, {"$min": {"a": 3}}, {"_id": 1, "a": 3}, diff({"u": {"a": 3}}))
    check({"_id": 1, "a": 5}, {"$min": {"a": 7}}, {"_id": 1, "a": 5}, None)
    check({"_id": 1, "a": 5}, {"$max": {"a": 7}}, {"_id": 1, "a": 7}, diff({"u": {"a": 7}}))
    check({"_id": 1, "a": 5}, {"$max": {"a": 5.0}}, {"_id": 1, "a": 5}, None)  # equal: no-op
    # server order across types: strings sort after numbers
    check({"_id": 1, "a": 5}, {"$max": {"a": "x"}}, {"_id": 1, "a": "x"},
          diff({"u": {"a": "x"}}))
    check({"_id": 1}, {"$min": {"a": 1}}, {"_id": 1, "a": 1}, diff({"i": {"a": 1}}))


# ----------------------------------------------------------------- $push (push_node_test.cpp)

@pytest.mark.parametrize(("doc", "spec", "new_doc", "o"), [
    # appending to a non-empty array: only the new elements, at their indexes
    ({"a": [1]}, 2, {"a": [1, 2]}, diff({"sa": {"a": True, "u1": 2}})),
    ({"a": [1]}, {"$each": [2, 3]}, {"a": [1, 2, 3]}, diff({"sa": {"a": True, "u1": 2, "u2": 3}})),
    # pushing onto an empty array logs the whole array
    ({"a": []}, 1, {"a": [1]}, diff({"u": {"a": [1]}})),
    # a missing array is created
    ({}, {"$each": [1, 2]}, {"a": [1, 2]}, diff({"i": {"a": [1, 2]}})),
    # $position inside the array, $sort and a trimming $slice log the whole array
    ({"a": [1, 2]}, {"$each": [0], "$position": 0}, {"a": [0, 1, 2]},
     diff({"u": {"a": [0, 1, 2]}})),
    ({"a": [1, 2]}, {"$each": [5], "$position": -1}, {"a": [1, 5, 2]},
     diff({"u": {"a": [1, 5, 2]}})),
    ({"a": [1, 2]}, {"$each": [5], "$position": 2}, {"a": [1, 2, 5]},
     diff({"u": {"a": [1, 2, 5]}})),
    ({"a": [1, 2]}, {"$each": [5], "$position": 3}, {"a": [1, 2, 5]},
     diff({"sa": {"a": True, "u2": 5}})),
    ({"a": [3, 1]}, {"$each": [2], "$sort": 1}, {"a": [1, 2, 3]}, diff({"u": {"a": [1, 2, 3]}})),
    ({"a": [1, 2]}, {"$each": [3], "$slice": -2}, {"a": [2, 3]}, diff({"u": {"a": [2, 3]}})),
    # a $slice that trims nothing keeps the append diff
    ({"a": [1, 2]}, {"$each": [3], "$slice": 5}, {"a": [1, 2, 3]},
     diff({"sa": {"a": True, "u2": 3}})),
    # $sort always counts as a change, even when nothing moves
    ({"a": [1, 2]}, {"$each": [], "$sort": 1}, {"a": [1, 2]}, diff({"u": {"a": [1, 2]}})),
    ({"a": [{"x": 2}, {"x": 1}]}, {"$each": [{"x": 3}], "$sort": {"x": -1}},
     {"a": [{"x": 3}, {"x": 2}, {"x": 1}]}, diff({"u": {"a": [{"x": 3}, {"x": 2}, {"x": 1}]}})),
    # ApplyToArrayWithSlice: the trimmed result equals the old array, still a change
    ({"a": [3]}, {"$each": [2, -1], "$slice": 1}, {"a": [3]}, diff({"u": {"a": [3]}})),
    # ApplyEmptyEachToEmptyArray (a missing field): the empty array is created
    ({}, {"$each": []}, {"a": []}, diff({"i": {"a": []}})),
    # pushing a document pushes it as a value
    ({"a": [1]}, {"b": 1}, {"a": [1, {"b": 1}]}, diff({"sa": {"a": True, "u1": {"b": 1}}})),
])
def test_push(doc: dict, spec: Any, new_doc: dict, o: dict) -> None:
    check(doc, {"$push": {"a": spec}}, new_doc, o)


def test_push_noops_and_errors() -> None:
    check({"a": [1]}, {"$push": {"a": {"$each": []}}}, {"a": [1]}, None)
    check({"a": [1, 2]}, {"$push": {"a": {"$each": [], "$slice": 5}}}, {"a": [1, 2]}, None)
    error({"_id": 1, "a": 1}, {"$push": {"a": 2}}, 2, "The field 'a' must be an array but is "
          "of type int in document {_id: 1}")
    error({"a": []}, {"$push": {"a": {"$each": 1}}}, 2)
    error({"a": []}, {"$push": {"a": {"$each": [1], "$bogus": 1}}}, 2,
          "Unrecognized clause in $push: $bogus")
    error({"a": []}, {"$push": {"a": {"$each": [1], "$sort": 2}}}, 2)
    error({"a": []}, {"$push": {"a": {"$each": [1], "$slice": "x"}}}, 2)


def test_push_nested_paths() -> None:
    check({"_id": 1, "a": {"b": [1]}}, {"$push": {"a.b": 2}}, {"_id": 1, "a": {"b": [1, 2]}},
          diff({"sa": {"sb": {"a": True, "u1": 2}}}))
    check({"_id": 1, "a": [[1]]}, {"$push": {"a.0": 2}}, {"_id": 1, "a": [[1, 2]]},
          diff({"sa": {"a": True, "s0": {"a": True, "u1": 2}}}))


# ----------------------------------------------------------------- $addToSet (addtoset_node_test.cpp)

def test_add_to_set_logs_the_whole_array() -> None:
    # ApplyNonEach / ApplyEach: MongoDB 7.0 logs the whole array for $addToSet.
    check({"a": [0]}, {"$addToSet": {"a": 1}}, {"a": [0, 1]}, diff({"u": {"a": [0, 1]}}))
    check({"a": [0]}, {"$addToSet": {"a": {"$each": [1, 2]}}}, {"a": [0, 1, 2]},
          diff({"u": {"a": [0, 1, 2]}}))
    check({"a": [0]}, {"$addToSet": {"a": {"$each": [1, 1]}}}, {"a": [0, 1]},
          diff({"u": {"a": [0, 1]}}))
    check({"a": [0]}, {"$addToSet": {"a": {"$each": [0, 1]}}}, {"a": [0, 1]},
          diff({"u": {"a": [0, 1]}}))
    check({"a": [0]}, {"$addToSet": {"a": [1]}}, {"a": [0, [1]]}, diff({"u": {"a": [0, [1]]}}))
    # ApplyCreateArray / ApplyCreateEmptyArrayIsNotNoop
    check({}, {"$addToSet": {"a": {"$each": [0, 1]}}}, {"a": [0, 1]}, diff({"i": {"a": [0, 1]}}))
    check({}, {"$addToSet": {"a": {"$each": []}}}, {"a": []}, diff({"i": {"a": []}}))
    # ApplyNestedArray
    check({"_id": 1, "a": [1, []]}, {"$addToSet": {"a.1": 1}}, {"_id": 1, "a": [1, [1]]},
          diff({"sa": {"a": True, "u1": [1]}}))


def test_add_to_set_noops_and_errors() -> None:
    check({"a": [0]}, {"$addToSet": {"a": 0}}, {"a": [0]}, None)
    check({"a": [1]}, {"$addToSet": {"a": 1.0}}, {"a": [1]}, None)  # numeric equality
    check({"a": [0]}, {"$addToSet": {"a": {"$each": []}}}, {"a": [0]}, None)
    error({"a": 1}, {"$addToSet": {"a": 1}}, 2, "Cannot apply $addToSet to non-array field. "
          "Field named 'a' has non-array type int")
    error({"a": []}, {"$addToSet": {"a": {"$each": 1}}}, 14)


# ----------------------------------------------------------------- $pop, $pull, $pullAll

def test_pop() -> None:
    check({"a": [1, 2, 3]}, {"$pop": {"a": 1}}, {"a": [1, 2]}, diff({"u": {"a": [1, 2]}}))
    check({"a": [1, 2, 3]}, {"$pop": {"a": -1}}, {"a": [2, 3]}, diff({"u": {"a": [2, 3]}}))
    check({"a": []}, {"$pop": {"a": 1}}, {"a": []}, None)
    check({"b": 1}, {"$pop": {"a": 1}}, {"b": 1}, None)
    error({"a": 1}, {"$pop": {"a": 1}}, 14, "Path 'a' contains an element of non-array type 'int'")
    error({"a": [1]}, {"$pop": {"a": 2}}, 9, "$pop expects 1 or -1, found: 2")
    error({"a": [1]}, {"$pop": {"a": "x"}}, 9)
    error({"a": 1}, {"$pop": {"a.b": 1}}, 28)


def test_pull() -> None:
    check({"a": [1, 2, 1]}, {"$pull": {"a": 1}}, {"a": [2]}, diff({"u": {"a": [2]}}))
    check({"a": [1, 2, 3]}, {"$pull": {"a": {"$gte": 2}}}, {"a": [1]}, diff({"u": {"a": [1]}}))
    check({"a": [{"x": 1, "y": 1}, {"x": 2}]}, {"$pull": {"a": {"x": 1}}}, {"a": [{"x": 2}]},
          diff({"u": {"a": [{"x": 2}]}}))
    check({"a": ["ab", "cd"]}, {"$pull": {"a": bson.regex.Regex("^a")}}, {"a": ["cd"]},
          diff({"u": {"a": ["cd"]}}))
    check({"a": [1, 2]}, {"$pull": {"a": 3}}, {"a": [1, 2]}, None)
    check({"b": 1}, {"$pull": {"a": 3}}, {"b": 1}, None)
    error({"a": 1}, {"$pull": {"a": 1}}, 2, "Cannot apply $pull to a non-array value")
    error({"a": 1}, {"$pull": {"a.b": 1}}, 28)


def test_pull_all() -> None:
    check({"a": [1, 2, 3, 1]}, {"$pullAll": {"a": [1, 3]}}, {"a": [2]},
          diff({"u": {"a": [2]}}))
    check({"a": [1, 2]}, {"$pullAll": {"a": [5]}}, {"a": [1, 2]}, None)
    error({"a": [1]}, {"$pullAll": {"a": 1}}, 2,
          "$pullAll requires an array argument but was given a int")


# ----------------------------------------------------------------- $rename (rename_node_test.cpp)

@pytest.mark.parametrize(("doc", "spec", "new_doc", "o"), [
    ({"a": 2}, {"a": "b"}, {"b": 2}, diff({"d": {"a": False}, "i": {"b": 2}})),   # SimpleNumberAtRoot
    ({"a": 2, "b": 1}, {"a": "b"}, {"b": 2}, diff({"d": {"a": False}, "u": {"b": 2}})),
    ({"a": 2, "b": 2}, {"a": "b"}, {"b": 2}, diff({"d": {"a": False}, "u": {"b": 2}})),
    ({"a": {"c": {"d": 6}}, "b": 1}, {"a.c": "b"}, {"a": {}, "b": {"d": 6}},
     diff({"u": {"b": {"d": 6}}, "sa": {"d": {"c": False}}})),                   # FromDottedElement
    ({"a": {"b": {"c": 1, "d": 2}}, "b": 3, "c": {"d": 4}}, {"c.d": "a.b.c"},
     {"a": {"b": {"c": 4, "d": 2}}, "b": 3, "c": {}},
     diff({"sa": {"sb": {"u": {"c": 4}}}, "sc": {"d": {"d": False}}})),
    ({"a": 2, "b": 1, "c": {}}, {"a": "c.r.d"}, {"b": 1, "c": {"r": {"d": 2}}},
     diff({"d": {"a": False}, "sc": {"i": {"r": {"d": 2}}}})),                    # MissingCompleteTo
    ({"a": 2}, {"a": "b.c.d"}, {"b": {"c": {"d": 2}}},
     diff({"d": {"a": False}, "i": {"b": {"c": {"d": 2}}}})),                     # ToIsCompletelyMissing
    ({"b": 2}, {"a": "b"}, {"b": 2}, None),                              # RenameFromNonExistentPathIsNoOp
])
def test_rename(doc: dict, spec: dict, new_doc: dict, o: dict) -> None:
    check(doc, {"$rename": spec}, new_doc, o)


def test_rename_errors() -> None:
    error({"_id": "test_object", "a": [1, 2], "b": 2}, {"$rename": {"b": "a.2"}}, 2,
          "The destination field cannot be an array element, 'a.2' in doc with "
          "_id: \"test_object\" has an array field called 'a'")
    error({"a": [1, 2], "b": 2}, {"$rename": {"b": "a.2"}}, 2,
          "The destination field cannot be an array element, 'a.2' in doc with no id has "
          "an array field called 'a'")
    error({"_id": "test_object", "a": [1, 2]}, {"$rename": {"a.0": "b"}}, 2,
          "The source field cannot be an array element, 'a.0' in doc with "
          "_id: \"test_object\" has an array field called 'a'")
    error({"a": [{"a": 1}, {"b": 2}]}, {"$rename": {"a.a": "b"}}, 28,
          "cannot use the part (a of a.a) to traverse the element ({a: [ { a: 1 }, { b: 2 } ]})")
    error({"a": 1}, {"$rename": {"a": "a"}}, 2)
    error({"a": 1}, {"$rename": {"a": "a.b"}}, 2)
    error({"a": 1}, {"$rename": {"a": 5}}, 2)
    error({"a": 1}, {"$rename": {"a": "b"}, "$set": {"b": 1}}, 40)
    error({"_id": 1, "a": 1}, {"$rename": {"_id": "b"}}, 66)


# ----------------------------------------------------------------- $currentDate

def test_current_date() -> None:
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, 6000)
    ts = Timestamp(1700000000, 7)
    outcome = apply_update({"_id": 1, "a": 1},
                           {"$currentDate": {"a": True, "b": {"$type": "timestamp"}}},
                           now=lambda: when, cluster_time=lambda: ts)
    assert same(outcome.new_doc, {"_id": 1, "a": when, "b": ts})
    assert same(outcome.oplog_o, diff({"u": {"a": when}, "i": {"b": ts}}))
    default = apply_update({"_id": 1}, {"$currentDate": {"d": {"$type": "date"}}})
    assert isinstance(default.new_doc["d"], datetime.datetime)
    error({"_id": 1}, {"$currentDate": {"a": {"$type": "x"}}}, 2)
    error({"_id": 1}, {"$currentDate": {"a": 1}}, 2)


# ----------------------------------------------------------------- $setOnInsert

def test_set_on_insert_only_applies_on_insert() -> None:
    check({"_id": 1}, {"$setOnInsert": {"a": 1}}, {"_id": 1}, None)
    outcome = apply_update({"_id": 1}, {"$setOnInsert": {"a": 1}}, upsert_insert=True)
    assert same(outcome.new_doc, {"_id": 1, "a": 1})


# ----------------------------------------------------------------- positional and array filters

def _apply_with_matched(doc: dict, update: dict, matched: str) -> tuple[dict, dict | None]:
    """Drive the tree with a given elemMatchKey, as update_object_node_test.cpp does."""
    tree, _ = parse_operator_update(update, {})
    new_doc = dict(doc)
    ctx = ApplyContext(doc=new_doc, matched_field=matched, log=V2LogBuilder())
    noop = tree.apply(root_ref(new_doc), ctx)
    return new_doc, None if noop else ctx.log.serialize()  # type: ignore[union-attr]


@pytest.mark.parametrize(("update", "matched", "new_doc", "o"), [
    # ApplyOrderMergedPositionalChild / ApplyDoNotMergePositionalChild / ApplyPositionalChildLast
    ({"$set": {"a.2": 5, "a.1.b": 6, "a.0": 7, "a.$.c": 8}}, "1",
     {"a": {"0": 7, "1": {"b": 6, "c": 8}, "2": 5}},
     diff({"i": {"a": {"0": 7, "1": {"b": 6, "c": 8}, "2": 5}}})),
    ({"$set": {"a.0": 5, "a.2": 6, "a.$": 7}}, "1", {"a": {"0": 5, "1": 7, "2": 6}},
     diff({"i": {"a": {"0": 5, "1": 7, "2": 6}}})),
    ({"$set": {"a.$": 5, "a.0": 6, "a.1": 7}}, "2", {"a": {"0": 6, "1": 7, "2": 5}},
     diff({"i": {"a": {"0": 6, "1": 7, "2": 5}}})),
])
def test_positional_order_on_empty_document(update: dict, matched: str, new_doc: dict,
                                            o: dict) -> None:
    got_doc, got_o = _apply_with_matched({}, update, matched)
    assert same(got_doc, new_doc) and same(got_o, o)


def test_positional_merges_with_the_same_index() -> None:
    # ApplyMergePositionalChild / ApplyDoNotUseStoredMergedPositional
    got_doc, got_o = _apply_with_matched({"a": [{"b": 0, "c": 0}]},
                                         {"$set": {"a.0.b": 5, "a.$.c": 6}}, "0")
    assert same(got_doc, {"a": [{"b": 5, "c": 6}]})
    assert same(got_o, diff({"sa": {"a": True, "s0": {"u": {"b": 5, "c": 6}}}}))
    got_doc, got_o = _apply_with_matched({"a": [{"b": 0, "c": 0}, {"c": 0, "d": 0}]},
                                         {"$set": {"a.0.b": 5, "a.$.c": 6, "a.1.d": 7}}, "1")
    assert same(got_doc, {"a": [{"b": 5, "c": 0}, {"c": 6, "d": 7}]})
    assert same(got_o, diff({"sa": {"a": True, "s0": {"u": {"b": 5}},
                                    "s1": {"u": {"c": 6, "d": 7}}}}))
    with pytest.raises(CommandError) as info:
        _apply_with_matched({}, {"$set": {"a.0": 5, "a.$": 6}}, "0")
    assert info.value.code == 40 and info.value.message == "Update created a conflict at 'a.0'"


def test_positional_through_the_query() -> None:
    doc = {"_id": 1, "a": [{"x": 1}, {"x": 2}]}
    check(doc, {"$set": {"a.$.y": 1}}, {"_id": 1, "a": [{"x": 1}, {"x": 2, "y": 1}]},
          diff({"sa": {"a": True, "s1": {"i": {"y": 1}}}}), query={"a.x": 2})
    check({"_id": 1, "a": [5, 6, 7]}, {"$inc": {"a.$": 10}}, {"_id": 1, "a": [5, 16, 7]},
          diff({"sa": {"a": True, "u1": 16}}), query={"a": 6})
    error(doc, {"$set": {"a.$.y": 1}}, 2,
          "The positional operator did not find the match needed from the query.")
    error(doc, {"$set": {"a.$.$": 1}}, 2)
    error(doc, {"$set": {"$.a": 1}}, 2)


def test_all_positional() -> None:
    doc = {"_id": 1, "a": [{"x": 1}, {"x": 2}]}
    # several elements changed: the whole array is logged (update_array_node.cpp)
    check(doc, {"$set": {"a.$[].y": 0}}, {"_id": 1, "a": [{"x": 1, "y": 0}, {"x": 2, "y": 0}]},
          diff({"u": {"a": [{"x": 1, "y": 0}, {"x": 2, "y": 0}]}}))
    # several matched but one changed: that element is logged whole
    check({"_id": 1, "a": [{"x": 1}, {"x": 2}]}, {"$max": {"a.$[].x": 2}},
          {"_id": 1, "a": [{"x": 2}, {"x": 2}]}, diff({"sa": {"a": True, "u0": {"x": 2}}}))
    # one element: the child logs itself
    check({"_id": 1, "a": [{"x": 1}]}, {"$set": {"a.$[].y": 0}},
          {"_id": 1, "a": [{"x": 1, "y": 0}]}, diff({"sa": {"a": True, "s0": {"i": {"y": 0}}}}))
    check({"_id": 1, "a": []}, {"$set": {"a.$[].y": 0}}, {"_id": 1, "a": []}, None)
    error({"_id": 1}, {"$set": {"a.$[].y": 0}}, 2, "The path 'a' must exist in the document in "
          "order to apply array updates.")
    error({"_id": 1, "a": 1}, {"$set": {"a.$[].y": 0}}, 2)


def test_array_filters() -> None:
    doc = {"_id": 1, "a": [{"x": 1}, {"x": 2}, {"x": 3}]}
    check(doc, {"$set": {"a.$[e].y": 1}}, {"_id": 1, "a": [{"x": 1}, {"x": 2, "y": 1}, {"x": 3}]},
          diff({"sa": {"a": True, "s1": {"i": {"y": 1}}}}), array_filters=[{"e.x": 2}])
    check(doc, {"$inc": {"a.$[e].x": 10}},
          {"_id": 1, "a": [{"x": 1}, {"x": 12}, {"x": 13}]},
          diff({"u": {"a": [{"x": 1}, {"x": 12}, {"x": 13}]}}),
          array_filters=[{"e.x": {"$gte": 2}}])
    check({"_id": 1, "a": [1, 5, 9]}, {"$set": {"a.$[big]": 0}}, {"_id": 1, "a": [1, 0, 0]},
          diff({"u": {"a": [1, 0, 0]}}), array_filters=[{"big": {"$gt": 4}}])
    error(doc, {"$set": {"a.$[e].y": 1}}, 2, "No array filter found for identifier 'e' in path "
          "'a.$[e].y'")
    error(doc, {"$set": {"a.b": 1}}, 9, array_filters=[{"e.x": 1}])
    error(doc, {"$set": {"a.$[E]": 1}}, 2, array_filters=[{"E": 1}])
    error(doc, {"$set": {"a.$[e]": 1}}, 9, array_filters=[{"e": 1}, {"e": 2}])
    error(doc, {"$set": {"$[e]": 1}}, 2, array_filters=[{"e": 1}])


# ----------------------------------------------------------------- replacements

def test_replacement() -> None:
    outcome = apply_update({"_id": 1, "a": 1, "b": 2}, {"c": 3})
    assert outcome.is_replacement
    assert same(outcome.new_doc, {"_id": 1, "c": 3}) and same(outcome.oplog_o, {"_id": 1, "c": 3})
    outcome = apply_update({"_id": 1, "a": 1}, {"_id": 1, "a": 1})
    assert outcome.oplog_o is None and outcome.is_replacement
    # the replacement keeps its own order; an equal _id of another type is allowed
    check({"_id": 1, "a": 1}, {"a": 2, "_id": 1.0}, {"a": 2, "_id": 1.0}, {"a": 2, "_id": 1.0})
    # an empty replacement keeps only _id
    check({"_id": 1, "a": 1}, {}, {"_id": 1}, {"_id": 1})
    error({"_id": 1}, {"_id": 2, "a": 1}, 66)
    error({"_id": 1}, {"a": 1, "$set": {"b": 1}}, 2)


# ----------------------------------------------------------------- pipeline updates (pipeline_executor.cpp,
# document_diff_calculator.cpp)

def test_pipeline_small_documents_fall_back_to_replacement() -> None:
    outcome = apply_update({"_id": 1, "a": 1, "b": 2}, [{"$set": {"c": "$a"}}, {"$unset": "b"}])
    assert outcome.is_replacement
    assert same(outcome.oplog_o, {"_id": 1, "a": 1, "c": 1})


def test_pipeline_diff_on_larger_documents() -> None:
    doc = {"_id": 1, "text": "x" * 100, "n": 1, "sub": {"k": "y" * 40, "v": 1},
           "arr": list(range(10))}
    outcome = apply_update(doc, [{"$set": {"n": {"$add": ["$n", 1]}, "sub.v": 2, "new": True}},
                                 {"$set": {"arr": {"$literal": [0, 1, 2]}}}])
    assert not outcome.is_replacement
    assert same(outcome.new_doc, {"_id": 1, "text": "x" * 100, "n": 2,
                                  "sub": {"k": "y" * 40, "v": 2}, "arr": [0, 1, 2], "new": True})
    assert same(outcome.oplog_o, diff({"u": {"n": 2}, "i": {"new": True},
                                       "ssub": {"u": {"v": 2}}, "sarr": {"a": True, "l": 3}}))


def test_pipeline_deletes_are_sorted_and_moved_fields_reinserted() -> None:
    doc = {"_id": 1, "pad": "p" * 200, "z": 1, "y": 2, "x": 3}
    outcome = apply_update(doc, [{"$project": {"pad": 1, "x": 1}}, {"$set": {"w": 4}}])
    assert same(outcome.new_doc, {"_id": 1, "pad": "p" * 200, "x": 3, "w": 4})
    assert same(outcome.oplog_o, diff({"d": {"y": False, "z": False}, "i": {"w": 4}}))


def test_pipeline_noop_and_errors() -> None:
    check({"_id": 1, "a": 1}, [{"$set": {"a": 1}}], {"_id": 1, "a": 1}, None)
    error({"_id": 1}, [{"$match": {}}], 72)
    error({"_id": 1}, [{"$set": {"a": 1}}], 9, array_filters=[{"e": 1}])
    error({"_id": 1}, [{"$set": {"_id": 2}}], 66)
    error({"_id": 1}, [{"$set": {"a": {"$bogus": 1}}}], 168)


def test_pipeline_replace_with() -> None:
    doc = {"_id": 1, "inner": {"a": 1, "b": "z" * 50}, "other": "o" * 50}
    outcome = apply_update(doc, [{"$replaceWith": "$inner"}])
    assert same(outcome.new_doc, {"_id": 1, "a": 1, "b": "z" * 50})
    error(doc, [{"$replaceWith": "$other"}], 40228)


# ----------------------------------------------------------------- upserts (produce_document_for_upsert.cpp)

def test_upsert_document_from_equalities_and_update() -> None:
    doc = upsert_document({"b": 1, "a": {"$eq": 2}, "_id": 7, "c": {"$gt": 1}},
                          {"$set": {"d": 1}, "$setOnInsert": {"e": 2}, "$inc": {"n": 1}})
    assert same(doc, {"_id": 7, "a": 2, "b": 1, "d": 1, "e": 2, "n": 1})
    doc = upsert_document({"x.y": 1, "$and": [{"z": 2}]}, {"$set": {"w": 1}})
    assert isinstance(doc["_id"], ObjectId)
    assert same({k: v for k, v in doc.items() if k != "_id"}, {"x": {"y": 1}, "z": 2, "w": 1})
    assert list(doc)[0] == "_id"


def test_upsert_replacement_keeps_only_the_id_of_the_filter() -> None:
    doc = upsert_document({"_id": 3, "a": 1}, {"b": 2})
    assert same(doc, {"_id": 3, "b": 2})
    doc = upsert_document({"a": 1}, {"b": 2, "_id": 9})
    assert same(doc, {"_id": 9, "b": 2})
    with pytest.raises(CommandError) as info:
        upsert_document({"_id": 3}, {"_id": 4})
    assert info.value.code == 66


def test_upsert_errors() -> None:
    with pytest.raises(CommandError) as info:
        upsert_document({"a": 1, "$and": [{"a": 2}]}, {"$set": {"b": 1}})
    assert info.value.code == 54
    with pytest.raises(CommandError) as info:
        upsert_document({"_id": 1}, {"$set": {"_id": 2}})
    assert info.value.code == 66
    with pytest.raises(CommandError) as info:
        upsert_document({"a": [1]}, {"$set": {"a.$": 2}})
    assert info.value.code == 2


def test_upsert_with_pipeline() -> None:
    doc = upsert_document({"_id": 1, "a": 2}, [{"$set": {"b": {"$add": ["$a", 1]}}}])
    assert same(doc, {"_id": 1, "a": 2, "b": 3})


# ----------------------------------------------------------------- the pipeline diff itself
# (document_diff_calculator_test.cpp; the third value is the padding the test passes)

_LONG = "veryLargeStringValueveryLargeStringValue"
DIFF_VECTORS = [
    ({"field1": 1}, {"field1": 1}, 5, {}),                                   # SameObjectsNoDiff
    ({}, {}, 0, None),                                                       # EmptyObjsNoDiff
    ({"a": {"b": 1}}, {"a": {"b": 1}, "c": 1}, 0, {"i": {"c": 1}}),          # SimpleInsert
    ({"a": {"b": 1}, "c": 1}, {"a": {"b": 1}, "c": 2}, 0, {"u": {"c": 2}}),  # SimpleUpdate
    ({"a": {"b": 1}, "c": 1}, {"a": {"b": 1}}, 0, {"d": {"c": False}}),      # SimpleDelete
    ({"a": {}, "e": 1, "f": 1}, {"a": {"b": {"c": {"d": 1}}}, "e": 1, "f": 1}, 0,
     {"u": {"a": {"b": {"c": {"d": 1}}}}}),                                  # SimpleInsertNestedSingle
    ({"a": {"b": {"c": {"d": 1, "e": 1, "f": 1}}}}, {"a": {"b": {"c": {"d": 2, "e": 1, "f": 1}}}},
     0, {"sa": {"sb": {"sc": {"u": {"d": 2}}}}}),                            # SimpleUpdateNestedObj
    ({"a": {"b": {"c": {"d": 1}, "e": 1, "f": 1}}}, {"a": {"b": {"c": {}, "e": 1, "f": 1}}}, 0,
     {"sa": {"sb": {"u": {"c": {}}}}}),                                      # SimpleDeleteNestedObj
    ({"a": 1, "b": 2, "c": 3}, {"A": 1, "B": 2, "C": 3}, 0, None),          # ReplaceAllFieldsLargeDelta
    ({"b": 1, "c": 1, "d": 1}, {"a": 1, "b": 1, "c": 1, "d": 1}, 0, None),   # InsertFrontFieldLargeDelta
    ({"b": 1}, {}, 0, None), ({}, {"b": 1}, 0, None),                        # Empty{Post,Pre}ObjLargeDelta
    ({"a": 1, "b": "valueString", "c": 3, "d": 4}, {"b": "valueString", "c": 3, "d": 4, "a": 1},
     15, {"i": {"a": 1}}),                                                   # DeleteAndInsertFieldAtTheEnd
    ({"b": 1, "a": 2, "c": 3, "d": 4, "e": "valueString"}, {"c": 3, "d": 4, "e": "valueString"},
     15, {"d": {"a": False, "b": False}}),                                   # DeletesRecordedInAscendingOrder
    ({"b": 1, "a": 2, "c": "value", "d": "valueString", "e": "valueString", "g": 1, "f": 1},
     {"c": "value", "d": "valueString", "e": "valueString"}, 15,
     {"d": {"g": False, "f": False, "a": False, "b": False}}),
    ({"a": "valueString", "b": 2, "c": {"subField1": 1, "subField2": 3.0}, "d": 4},
     {"a": "valueString", "b": 2, "c": {"subField1": 1, "subField2": 3}, "d": 4}, 15,
     {"sc": {"u": {"subField2": 3}}}),                                       # DataTypeChangeRecorded
    ({"a": None}, {}, 15, None),                                             # NullAndMissing
    ({"a": 1, "b": 2, "c": {"p": 1, "q": 1, "s": 1, "r": 2}, "d": 4},
     {"a": 1, "b": 2, "c": {"p": 1, "q": 1, "r": 2, "s": 1}, "d": 4}, 10,
     {"sc": {"i": {"s": 1}}}),                                               # FieldOrder
    ({"field1": "abcd", "field2": [1, 2, 3]}, {"field1": "abcd", "field2": [1, 2, 3, 4]}, 5,
     {"sfield2": {"a": True, "u3": 4}}),                                     # SimpleArrayPush
    ({"field1": "abcd", "field2": [1, 2, 3, [[2]]]}, {"field1": "abcd", "field2": [1, 2, 3, [[4]]]},
     0, {"sfield2": {"a": True, "u3": [[4]]}}),                              # NestedArray
    ({"field1": "abcd", "field2": [1, 2, 3, [1, "longString", [2], 4, 5, 6], 5, 5, 5]},
     {"field1": "abcd", "field2": [1, 2, 3, [1, "longString", [4], 4], 5, 6]}, 0,
     {"sfield2": {"a": True, "l": 6, "s3": {"a": True, "l": 4, "u2": [4]}, "u5": 6}}),
    ({"": "1", "field2": [1, 2, 3, {"": {"": 1, "padding": "largeFieldValue"}}]},
     {"": "2", "field2": [1, 2, 3, {"": {"": 2, "padding": "largeFieldValue"}}]}, 15,
     {"u": {"": "2"}, "sfield2": {"a": True, "s3": {"s": {"u": {"": 2}}}}}),  # SubObjHasEmptyFieldName
    ({"field1": "abcd", "field2": [1, 2, 3, {"field3": [_LONG, 2, 3, 4]}]},
     {"field1": "abcd", "field2": [1, 2, 3, {"field3": [_LONG, 2, 4, 3, 5]}]}, 0,
     {"sfield2": {"a": True, "s3": {"sfield3": {"a": True, "u2": 4, "u3": 3, "u4": 5}}}}),
    ({"field1": "abcd", "field2": [1, 2, 3, {"field3": ["largeString", 2, 3, 4, 5]}]},
     {"field1": "abcd", "field2": [1, 2, 3, {"field3": ["largeString", 2, 3, 5]}]}, 15,
     {"sfield2": {"a": True, "s3": {"sfield3": {"a": True, "l": 4, "u3": 5}}}}),
    ({"field1": "abcd", "field2": [1, 2, 3, {"field3": [2, 3, 4, 5]}]},
     {"field1": "abcd", "field2": [1, 2, 3, {"field3": [1, 2, 3, 4, 5]}]}, 15,
     {"sfield2": {"a": True, "u3": {"field3": [1, 2, 3, 4, 5]}}}),         # SubArrayInSubArrayLargeDelta
    ({"field1": [1, 2, 3, 4, 5, 6, {"a": 1, "b": 2, "c": 3, "d": 4}, 7]},
     {"field1": [1, 2, 3, 4, 5, 6, {"p": 1, "q": 2}, 7]}, 0,
     {"sfield1": {"a": True, "u6": {"p": 1, "q": 2}}}),                     # SubObjInSubArrayLargeDelta
    ({"field": {"p": "someString", "q": 2, "r": {"a": 1, "b": 2, "c": 3, "d": 4}, "s": 3}},
     {"field": {"p": "someString", "q": 2, "r": {"p": 1, "q": 2}, "s": 3}}, 0,
     {"sfield": {"u": {"r": {"p": 1, "q": 2}}}}),                           # SubObjInSubObjLargeDelta
    ({"field": {"p": "someString", "q": 2, "r": [1, 3, 4, 5], "s": 3}},
     {"field": {"p": "someString", "q": 2, "r": [1, 2, 3, 4], "s": 3}}, 0,
     {"sfield": {"u": {"r": [1, 2, 3, 4]}}}),                               # SubArrayInSubObjLargeDelta
]


@pytest.mark.parametrize(("pre", "post", "padding", "expected"), DIFF_VECTORS)
def test_compute_oplog_diff_server_vectors(pre: dict, post: dict, padding: int,
                                           expected: dict | None) -> None:
    from backupflows.sandbox.update_diff import compute_oplog_diff
    assert same(compute_oplog_diff(pre, post, padding), expected)


def test_compute_oplog_diff_nested_subobjects() -> None:
    from backupflows.sandbox.update_diff import compute_oplog_diff
    sub_pre = {"level2Field1": {"level3Field1": {"p": 1}, "level3Field2": {"q": 1}}}
    sub_post = {"level2Field1": {"level3Field1": {"q": 1}, "level3Field2": {"q": 1}}}
    pre = {"level1Field1": "abcd", "level1Field2": {**sub_pre, "level2Field2": 2},
           "level1Field3": 3, "level1Field4": sub_pre}
    post = {"level1Field1": "abcd", "level1Field2": {**sub_post, "level2Field2": 2},
            "level1Field3": "3", "level1Field4": sub_post}
    expected = {"u": {"level1Field3": "3"},
                "slevel1Field2": {"slevel2Field1": {"u": {"level3Field1": {"q": 1}}}},
                "slevel1Field4": {"slevel2Field1": {"u": {"level3Field1": {"q": 1}}}}}
    assert same(compute_oplog_diff(pre, post, 15), expected)
