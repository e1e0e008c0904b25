"""The oplog entry of each update operator, written through pymongo.

Each case inserts a document, runs one update, and asserts on what
local.oplog.rs holds afterwards: one `u` entry with `o2: {_id}` and the exact
`o` a MongoDB 7.0 primary writes (compared as BSON bytes: field order and
types count), or no entry at all for an update that changes nothing.  Runs
against the sandbox, or unchanged against a real replica set given by
BACKUPFLOWS_TEST_MONGODB_URI.  Expected diffs follow the server's update code
(src/mongo/db/update/, see backupflows/sandbox/update*.py).
"""

from __future__ import annotations

import datetime
from typing import Any

import bson
import pymongo
import pytest
from bson import SON
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.timestamp import Timestamp
from pymongo.errors import WriteError

ORDERED = CodecOptions(document_class=SON)


def _oplog(client: pymongo.MongoClient) -> Any:
    return client.local.get_collection("oplog.rs", codec_options=ORDERED)


def _last_ts(client: pymongo.MongoClient) -> Timestamp:
    return _oplog(client).find_one({}, sort=[("$natural", -1)])["ts"]


def _entries(client: pymongo.MongoClient, ns: str, since: Timestamp) -> list[SON]:
    found = _oplog(client).find({"ts": {"$gt": since}, "ns": ns}).sort("$natural", 1)
    return list(found)


def _bytes(value: Any) -> bytes:
    return bson.encode({"v": value})


def run_update(client: pymongo.MongoClient, db: str, doc: dict, update: Any,
               **kwargs: Any) -> tuple[list[SON], dict]:
    """Insert ``doc``, apply ``update`` to it; the update's oplog entries and the
    stored document afterwards."""
    coll = client[db].get_collection("c", codec_options=ORDERED)
    coll.insert_one(doc)
    since = _last_ts(client)
    coll.update_one({"_id": doc["_id"]}, update, **kwargs)
    found = _entries(client, f"{db}.c", since)
    return found, coll.find_one({"_id": doc["_id"]})


def diff(d: dict) -> dict:
    return {"$v": 2, "diff": d}


CASES: list[tuple[str, dict, Any, dict | None]] = [
    # the examples
    ("inc", {"_id": 1, "a": 2}, {"$inc": {"a": 1}}, diff({"u": {"a": 3}})),
    ("inc_array_index", {"_id": 1, "a": [2]}, {"$inc": {"a.0": 1}},
     diff({"sa": {"a": True, "u0": 3}})),
    # $set: in place, appended in lexicographic order, nested creation, sub-diffs
    ("set", {"_id": 1, "z": 0, "a": 0}, {"$set": {"d": 6, "a": 5, "b": 8, "z": 9}},
     diff({"u": {"a": 5, "z": 9}, "i": {"b": 8, "d": 6}})),
    ("set_new_path", {"_id": 1}, {"$set": {"a.b.c": 1, "a.d": 2}},
     diff({"i": {"a": {"b": {"c": 1}, "d": 2}}})),
    ("set_sub_document", {"_id": 1, "a": {"b": 1}}, {"$set": {"a.b": 2, "a.c": 3}},
     diff({"sa": {"u": {"b": 2}, "i": {"c": 3}}})),
    ("set_array_padding", {"_id": 1, "a": [1]}, {"$set": {"a.3": 4}},
     diff({"sa": {"a": True, "u3": 4}})),
    ("set_type_change", {"_id": 1, "a": 1}, {"$set": {"a": Int64(1)}}, diff({"u": {"a": Int64(1)}})),
    ("set_same_value", {"_id": 1, "a": 1}, {"$set": {"a": 1}}, None),
    # $unset
    ("unset", {"_id": 1, "a": 1, "b": {"c": 1, "d": 2}}, {"$unset": {"a": "", "b.c": ""}},
     diff({"d": {"a": False}, "sb": {"d": {"c": False}}})),
    ("unset_array_element", {"_id": 1, "a": [1, 2]}, {"$unset": {"a.0": ""}},
     diff({"sa": {"a": True, "u0": None}})),
    ("unset_missing", {"_id": 1, "a": 1}, {"$unset": {"x": ""}}, None),
    # $inc / $mul
    ("inc_overflow_to_long", {"_id": 1, "a": 2 ** 31 - 1}, {"$inc": {"a": 1}},
     diff({"u": {"a": Int64(2 ** 31)}})),
    ("inc_zero", {"_id": 1, "a": 5}, {"$inc": {"a": 0}}, None),
    ("inc_double_zero", {"_id": 1, "a": 5}, {"$inc": {"a": 0.0}}, diff({"u": {"a": 5.0}})),
    ("inc_missing", {"_id": 1}, {"$inc": {"n": 2}}, diff({"i": {"n": 2}})),
    ("mul", {"_id": 1, "a": 3}, {"$mul": {"a": 2, "b": 5}}, diff({"u": {"a": 6}, "i": {"b": 0}})),
    # $min / $max
    ("min", {"_id": 1, "a": 5}, {"$min": {"a": 3}}, diff({"u": {"a": 3}})),
    ("max_noop", {"_id": 1, "a": 5}, {"$max": {"a": 3}}, None),
    # $push: appends are array diffs, anything else rewrites the array
    ("push", {"_id": 1, "a": [1]}, {"$push": {"a": 2}}, diff({"sa": {"a": True, "u1": 2}})),
    ("push_each", {"_id": 1, "a": [1]}, {"$push": {"a": {"$each": [2, 3]}}},
     diff({"sa": {"a": True, "u1": 2, "u2": 3}})),
    ("push_empty_array", {"_id": 1, "a": []}, {"$push": {"a": 1}}, diff({"u": {"a": [1]}})),
    ("push_new_array", {"_id": 1}, {"$push": {"a": 1}}, diff({"i": {"a": [1]}})),
    ("push_position", {"_id": 1, "a": [1, 2]}, {"$push": {"a": {"$each": [0], "$position": 0}}},
     diff({"u": {"a": [0, 1, 2]}})),
    ("push_sort", {"_id": 1, "a": [3, 1]}, {"$push": {"a": {"$each": [2], "$sort": 1}}},
     diff({"u": {"a": [1, 2, 3]}})),
    ("push_slice", {"_id": 1, "a": [1, 2]}, {"$push": {"a": {"$each": [3], "$slice": -2}}},
     diff({"u": {"a": [2, 3]}})),
    # $addToSet (7.0: the whole array)
    ("add_to_set", {"_id": 1, "a": [1]}, {"$addToSet": {"a": 2}}, diff({"u": {"a": [1, 2]}})),
    ("add_to_set_present", {"_id": 1, "a": [1]}, {"$addToSet": {"a": 1}}, None),
    # $pop, $pull, $pullAll
    ("pop", {"_id": 1, "a": [1, 2, 3]}, {"$pop": {"a": -1}}, diff({"u": {"a": [2, 3]}})),
    ("pop_empty", {"_id": 1, "a": []}, {"$pop": {"a": 1}}, None),
    ("pull", {"_id": 1, "a": [1, 2, 1]}, {"$pull": {"a": 1}}, diff({"u": {"a": [2]}})),
    ("pull_condition", {"_id": 1, "a": [{"x": 1}, {"x": 5}]}, {"$pull": {"a": {"x": {"$gt": 2}}}},
     diff({"u": {"a": [{"x": 1}]}})),
    ("pull_nothing", {"_id": 1, "a": [1]}, {"$pull": {"a": 9}}, None),
    ("pull_all", {"_id": 1, "a": [1, 2, 3]}, {"$pullAll": {"a": [1, 3]}}, diff({"u": {"a": [2]}})),
    # $rename: the destination first (u or i), then d of the source
    ("rename", {"_id": 1, "a": 1}, {"$rename": {"a": "b"}},
     diff({"d": {"a": False}, "i": {"b": 1}})),
    ("rename_onto_existing", {"_id": 1, "a": 1, "b": 2}, {"$rename": {"a": "b"}},
     diff({"d": {"a": False}, "u": {"b": 1}})),
    ("rename_nested", {"_id": 1, "a": {"c": {"d": 6}}, "b": 1}, {"$rename": {"a.c": "b"}},
     diff({"u": {"b": {"d": 6}}, "sa": {"d": {"c": False}}})),
    ("rename_missing", {"_id": 1, "b": 1}, {"$rename": {"a": "c"}}, None),
    # several operators: applied in path order
    ("mixed", {"_id": 1, "a": 1, "b": [1], "c": {"x": 1}},
     {"$inc": {"a": 1}, "$push": {"b": 2}, "$unset": {"c.x": ""}, "$set": {"d": 1}},
     diff({"u": {"a": 2}, "i": {"d": 1}, "sb": {"a": True, "u1": 2}, "sc": {"d": {"x": False}}})),
    # positional and array filters
    ("all_positional", {"_id": 1, "a": [{"x": 1}, {"x": 2}]}, {"$set": {"a.$[].y": 0}},
     diff({"u": {"a": [{"x": 1, "y": 0}, {"x": 2, "y": 0}]}})),
]


@pytest.mark.parametrize(("name", "doc", "update", "expected"), CASES,
                         ids=[c[0] for c in CASES])
def test_update_oplog_entry(mongo_client: pymongo.MongoClient, unique_db: str, name: str,
                            doc: dict, update: Any, expected: dict | None) -> None:
    found, stored = run_update(mongo_client, unique_db, doc, update)
    if expected is None:
        assert found == [], f"{name}: a no-op update must write no oplog entry"
        assert _bytes(stored) == _bytes(doc)
        return
    assert [e["op"] for e in found] == ["u"], found
    entry = found[0]
    assert _bytes(entry["o2"]) == _bytes({"_id": doc["_id"]})
    assert _bytes(entry["o"]) == _bytes(expected), entry["o"]


def test_positional_and_array_filters(mongo_client: pymongo.MongoClient, unique_db: str) -> None:
    coll = mongo_client[unique_db].get_collection("c", codec_options=ORDERED)
    coll.insert_one({"_id": 1, "a": [{"x": 1}, {"x": 2}, {"x": 3}]})
    since = _last_ts(mongo_client)
    coll.update_one({"_id": 1, "a.x": 2}, {"$set": {"a.$.y": 1}})
    coll.update_one({"_id": 1}, {"$inc": {"a.$[e].x": 10}}, array_filters=[{"e.x": {"$gte": 3}}])
    found = _entries(mongo_client, f"{unique_db}.c", since)
    assert [_bytes(e["o"]) for e in found] == [
        _bytes(diff({"sa": {"a": True, "s1": {"i": {"y": 1}}}})),
        _bytes(diff({"sa": {"a": True, "s2": {"u": {"x": 13}}}})),
    ]
    assert coll.find_one({"_id": 1})["a"] == [{"x": 1}, {"x": 2, "y": 1}, {"x": 13}]


def test_current_date_logs_the_new_values(mongo_client: pymongo.MongoClient,
                                          unique_db: str) -> None:
    found, stored = run_update(mongo_client, unique_db, {"_id": 1, "a": 1},
                               {"$currentDate": {"a": True, "t": {"$type": "timestamp"}}})
    assert len(found) == 1
    o = found[0]["o"]
    assert list(o) == ["$v", "diff"] and list(o["diff"]) == ["u", "i"]
    assert isinstance(o["diff"]["u"]["a"], datetime.datetime)
    assert isinstance(o["diff"]["i"]["t"], Timestamp)
    assert stored["t"] == o["diff"]["i"]["t"]


def test_replacement_logs_the_whole_document(mongo_client: pymongo.MongoClient,
                                             unique_db: str) -> None:
    found, stored = run_update_replace(mongo_client, unique_db)
    assert len(found) == 1 and found[0]["op"] == "u"
    assert _bytes(found[0]["o"]) == _bytes({"_id": 1, "b": 2})
    assert _bytes(found[0]["o2"]) == _bytes({"_id": 1})
    assert _bytes(stored) == _bytes({"_id": 1, "b": 2})


def run_update_replace(client: pymongo.MongoClient, db: str) -> tuple[list[SON], dict]:
    coll = client[db].get_collection("c", codec_options=ORDERED)
    coll.insert_one({"_id": 1, "a": 1})
    since = _last_ts(client)
    coll.replace_one({"_id": 1}, {"b": 2})
    coll.replace_one({"_id": 1}, {"_id": 1, "b": 2})  # identical: no entry
    return _entries(client, f"{db}.c", since), coll.find_one({"_id": 1})


def test_pipeline_update(mongo_client: pymongo.MongoClient, unique_db: str) -> None:
    big = {"_id": 1, "text": "x" * 100, "n": 1, "arr": list(range(10))}
    found, stored = run_update(mongo_client, unique_db, big,
                               [{"$set": {"n": {"$add": ["$n", 1]}, "new": True}},
                                {"$set": {"arr": {"$literal": [0, 1, 2]}}}])
    assert len(found) == 1
    assert _bytes(found[0]["o"]) == _bytes(
        diff({"u": {"n": 2}, "i": {"new": True}, "sarr": {"a": True, "l": 3}}))
    small = {"_id": 2, "a": 1}
    found, stored = run_update(mongo_client, unique_db, small, [{"$set": {"b": "$a"}}])
    assert _bytes(found[0]["o"]) == _bytes({"_id": 2, "a": 1, "b": 1})  # full document


def test_upsert_writes_an_insert(mongo_client: pymongo.MongoClient, unique_db: str) -> None:
    coll = mongo_client[unique_db].get_collection("c", codec_options=ORDERED)
    coll.insert_one({"_id": 0})
    since = _last_ts(mongo_client)
    coll.update_one({"_id": 5, "k": "v"}, {"$set": {"a": 1}, "$setOnInsert": {"b": 2}},
                    upsert=True)
    found = _entries(mongo_client, f"{unique_db}.c", since)
    assert [e["op"] for e in found] == ["i"]
    assert _bytes(found[0]["o"]) == _bytes({"_id": 5, "k": "v", "a": 1, "b": 2})


def test_multi_update_logs_each_changed_document(mongo_client: pymongo.MongoClient,
                                                 unique_db: str) -> None:
    coll = mongo_client[unique_db].get_collection("c", codec_options=ORDERED)
    coll.insert_many([{"_id": 1, "a": 1}, {"_id": 2, "a": 2}, {"_id": 3, "a": 9}])
    since = _last_ts(mongo_client)
    result = coll.update_many({}, {"$max": {"a": 2}})
    assert (result.matched_count, result.modified_count) == (3, 1)
    found = _entries(mongo_client, f"{unique_db}.c", since)
    assert [(e["o2"]["_id"], _bytes(e["o"])) for e in found] == \
        [(1, _bytes(diff({"u": {"a": 2}})))]


@pytest.mark.parametrize(("doc", "update", "code"), [
    ({"_id": 1, "a": "x"}, {"$inc": {"a": 1}}, 14),
    ({"_id": 1}, {"$set": {"a": 1}, "$inc": {"a": 1}}, 40),
    ({"_id": 1}, {"$set": {"_id": 2}}, 66),
    ({"_id": 1, "a": 1}, {"$set": {"a.b": 1}}, 28),
    ({"_id": 1, "a": 1}, {"$push": {"a": 1}}, 2),
])
def test_errors_write_nothing(mongo_client: pymongo.MongoClient, unique_db: str, doc: dict,
                              update: dict, code: int) -> None:
    coll = mongo_client[unique_db].get_collection("c", codec_options=ORDERED)
    coll.insert_one(doc)
    since = _last_ts(mongo_client)
    with pytest.raises(WriteError) as info:
        coll.update_one({"_id": doc["_id"]}, update)
    assert info.value.code == code
    assert _entries(mongo_client, f"{unique_db}.c", since) == []
    assert _bytes(coll.find_one({"_id": doc["_id"]})) == _bytes(doc)
