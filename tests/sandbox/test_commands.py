"""Everyday commands through pymongo (run against the sandbox or a real server)."""

from __future__ import annotations

import pytest
from bson import SON
from bson.codec_options import CodecOptions
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, OperationFailure

ORDERED = CodecOptions(document_class=SON)


def test_count_distinct_aggregate(mongo_client, unique_db):
    coll = mongo_client[unique_db].c
    coll.insert_many([{"_id": i, "k": i % 3, "tags": ["a", "b"] if i % 2 else ["c"]}
                      for i in range(10)])
    assert coll.estimated_document_count() == 10
    assert coll.count_documents({"k": 1}) == 3
    assert coll.count_documents({"_id": {"$gte": 5}}, skip=1, limit=2) == 2
    assert sorted(coll.distinct("k")) == [0, 1, 2]
    assert sorted(coll.distinct("tags", {"_id": {"$lt": 2}})) == ["a", "b", "c"]
    groups = list(coll.aggregate([{"$match": {"_id": {"$lt": 9}}},
                                  {"$group": {"_id": "$k", "n": {"$sum": 1}}},
                                  {"$sort": {"_id": 1}}]))
    assert groups == [{"_id": 0, "n": 3}, {"_id": 1, "n": 3}, {"_id": 2, "n": 3}]
    batches = coll.aggregate([{"$sort": {"_id": -1}}], batchSize=3)
    assert [d["_id"] for d in batches] == list(range(9, -1, -1))


def test_find_options(mongo_client, unique_db):
    coll = mongo_client[unique_db].c
    coll.insert_many([{"_id": i, "a": 10 - i, "b": {"c": i}} for i in range(10)])
    got = coll.find({"a": {"$gt": 2}}, {"b.c": 1, "_id": 0}).sort("a", 1).skip(1).limit(3)
    assert list(got) == [{"b": {"c": 6}}, {"b": {"c": 5}}, {"b": {"c": 4}}]
    assert coll.find_one({"_id": 4}, {"a": 1}) == {"_id": 4, "a": 6}
    assert [d["_id"] for d in coll.find().sort("_id", -1).limit(2)] == [9, 8]
    assert [d["_id"] for d in coll.find({"_id": {"$gt": 6}}).hint([("_id", 1)])] == [7, 8, 9]
    with pytest.raises(OperationFailure):
        list(coll.find({"a": {"$bogus": 1}}))


def test_find_and_modify(mongo_client, unique_db):
    coll = mongo_client[unique_db].c
    coll.insert_many([{"_id": 1, "n": 1}, {"_id": 2, "n": 5}])
    after = coll.find_one_and_update({"n": {"$gte": 1}}, {"$inc": {"n": 1}},
                                     sort=[("n", -1)], return_document=ReturnDocument.AFTER)
    assert after == {"_id": 2, "n": 6}
    before = coll.find_one_and_replace({"_id": 1}, {"x": 1})
    assert before == {"_id": 1, "n": 1}
    removed = coll.find_one_and_delete({"_id": 1})
    assert removed == {"_id": 1, "x": 1}
    upserted = coll.find_one_and_update({"_id": 3}, {"$set": {"n": 0}}, upsert=True,
                                        return_document=ReturnDocument.AFTER)
    assert upserted == {"_id": 3, "n": 0}
    assert coll.find_one_and_delete({"_id": 99}) is None


def test_retryable_find_and_modify_entry_asks_for_a_retry_image(mongo_client, unique_db):
    coll = mongo_client[unique_db].c
    coll.insert_one({"_id": 1, "n": 1})
    coll.find_one_and_update({"_id": 1}, {"$set": {"n": 2}},
                             return_document=ReturnDocument.AFTER)
    oplog = mongo_client.local.get_collection("oplog.rs", codec_options=ORDERED)
    entry = oplog.find_one({"ns": f"{unique_db}.c", "op": "u"})
    assert entry["needsRetryImage"] == "postImage"
    assert list(entry)[:9] == ["lsid", "txnNumber", "op", "ns", "ui", "o", "o2",
                               "needsRetryImage", "stmtId"]


def test_unordered_bulk_reports_every_error(mongo_client, unique_db):
    coll = mongo_client[unique_db].c
    coll.insert_one({"_id": 1})
    with pytest.raises(BulkWriteError) as info:
        coll.insert_many([{"_id": 1}, {"_id": 2}, {"_id": 1}, {"_id": 3}], ordered=False)
    details = info.value.details
    assert details["nInserted"] == 2
    assert [e["index"] for e in details["writeErrors"]] == [0, 2]
    assert all(e["code"] == 11000 for e in details["writeErrors"])
    with pytest.raises(BulkWriteError) as info:
        coll.insert_many([{"_id": 4}, {"_id": 1}, {"_id": 5}])
    assert info.value.details["nInserted"] == 1
    assert sorted(d["_id"] for d in coll.find()) == [1, 2, 3, 4]


def test_list_databases_and_stats(mongo_client, unique_db):
    mongo_client[unique_db].c.insert_one({"x": 1})
    names = mongo_client.list_database_names()
    assert unique_db in names and "admin" in names and "local" in names
    dbs = {d["name"]: d for d in mongo_client.list_databases()}
    assert dbs[unique_db]["sizeOnDisk"] > 0 and dbs[unique_db]["empty"] is False
    stats = mongo_client[unique_db].command("dbStats")
    assert stats["collections"] == 1 and stats["objects"] == 1
    status = mongo_client.admin.command("replSetGetStatus")
    assert status["myState"] == 1
    assert any(m["stateStr"] == "PRIMARY" and m.get("self") for m in status["members"])
    assert mongo_client.admin.command("serverStatus")["process"] in ("mongod", "mongod.exe")
    fcv = mongo_client.admin.command("getParameter", 1, featureCompatibilityVersion=1)
    assert fcv["featureCompatibilityVersion"]["version"]
    assert mongo_client.admin.command("buildInfo")["version"].startswith("7.0")


def test_views_are_read_only(mongo_client, unique_db):
    db = mongo_client[unique_db]
    db.c.insert_many([{"_id": i, "k": i % 2} for i in range(4)])
    db.command("create", "odd", viewOn="c", pipeline=[{"$match": {"k": 1}}])
    assert [d["_id"] for d in db.odd.find().sort("_id", 1)] == [1, 3]
    assert db.odd.count_documents({}) == 2
    with pytest.raises(OperationFailure) as info:
        db.odd.insert_one({"_id": 9})
    assert info.value.code == 166
    db.odd.drop()
    assert "odd" not in db.list_collection_names()


def test_create_refuses_bad_options(mongo_client, unique_db):
    db = mongo_client[unique_db]
    with pytest.raises(OperationFailure):
        db.command("create", "x", bogus=1)
    with pytest.raises(OperationFailure):
        db.command("create", "x", validationLevel="sometimes")
    db.create_collection("x")
    with pytest.raises(OperationFailure) as info:
        db.command("create", "x", capped=True, size=4096)
    assert info.value.code == 48
    db.command("create", "x")  # same options again: fine on 7.0


@pytest.mark.sandbox_only
def test_time_series_and_clustered_are_refused_clearly(mongo_client, unique_db):
    db = mongo_client[unique_db]
    for options in ({"timeseries": {"timeField": "t"}},
                    {"clusteredIndex": {"key": {"_id": 1}, "unique": True}}):
        with pytest.raises(OperationFailure) as info:
            db.command("create", "ts", **options)
        assert info.value.code == 115 and "sandbox" in str(info.value)


def test_sessions_end_and_cursor_reads_in_a_session(mongo_client, unique_db):
    coll = mongo_client[unique_db].c
    coll.insert_many([{"_id": i} for i in range(5)])
    with mongo_client.start_session() as session:
        assert len(list(coll.find({}, session=session, batch_size=2))) == 5
    mongo_client.admin.command("endSessions", [])


def test_connection_commands(mongo_client):
    assert mongo_client.admin.command("whatsmyuri")["you"]
    assert "authInfo" in mongo_client.admin.command("connectionStatus")
    assert "hello" in mongo_client.admin.command("listCommands")["commands"]
    assert mongo_client.admin.command("getCmdLineOpts")["ok"] == 1.0
    assert mongo_client.admin.command("hostInfo")["system"]["hostname"]
