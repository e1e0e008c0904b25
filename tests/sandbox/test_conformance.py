"""What local.oplog.rs holds after writes through pymongo, entry by entry.

Runs against the sandbox, or unchanged against a real MongoDB 7.0 replica set
given by BACKUPFLOWS_TEST_MONGODB_URI. Expected values are what a real 7.0
primary writes: src/mongo/db/op_observer/op_observer_impl.cpp and
src/mongo/db/repl/oplog_entry.idl of mongodb/mongo, and the 2024-2026 captures
in /work/shared/fixtures/mongo-tools (field order, Int64 t/v, o2 on inserts).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator

import pymongo
import pytest
from bson import SON, ObjectId, encode
from bson.binary import Binary
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp
from pymongo import monitoring
from pymongo.errors import DuplicateKeyError, OperationFailure

ORDERED = CodecOptions(document_class=SON)
PLAIN_FIELDS = ["op", "ns", "ui", "o", "o2", "ts", "t", "v", "wall"]
RETRYABLE_FIELDS = ["lsid", "txnNumber", "op", "ns", "ui", "o", "o2", "stmtId",
                    "ts", "t", "v", "wall", "prevOpTime"]
ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}


# -- helpers -------------------------------------------------------------------

def oplog(client: pymongo.MongoClient):
    return client.local.get_collection("oplog.rs", codec_options=ORDERED)


def last_ts(client: pymongo.MongoClient) -> Timestamp:
    return oplog(client).find_one({}, sort=[("$natural", -1)])["ts"]


def _touches(entry: SON, db: str) -> bool:
    if entry["ns"].startswith(db + "."):
        return True
    inner = entry["o"].get("applyOps") if entry["op"] == "c" else None
    return bool(inner) and any(op["ns"].startswith(db + ".") for op in inner)


def entries(client: pymongo.MongoClient, db: str, since: Timestamp) -> list[SON]:
    """Entries after ``since`` about database ``db`` (noops and others left out)."""
    found = oplog(client).find({"ts": {"$gt": since}}).sort("$natural", 1)
    return [e for e in found if _touches(e, db)]


def uuid_of(client: pymongo.MongoClient, db: str, coll: str) -> Binary:
    info = next(client[db].list_collections(filter={"name": coll}))
    return info["info"]["uuid"]


def check_common(entry: SON, fields: list[str] | None = None) -> None:
    """ts/t/v/wall present and typed as a 7.0 primary writes them."""
    assert isinstance(entry["ts"], Timestamp)
    assert isinstance(entry["t"], Int64) and entry["t"] >= 1
    assert isinstance(entry["v"], Int64) and entry["v"] == 2
    assert entry["wall"].year >= 2020
    if fields is not None:
        assert list(entry) == fields


@pytest.fixture
def plain(mongo_uri: str) -> Iterator[pymongo.MongoClient]:
    """A client without retryable writes: entries carry no session fields."""
    client = pymongo.MongoClient(mongo_uri, retryWrites=False, serverSelectionTimeoutMS=10000)
    yield client
    client.close()


# -- inserts ---------------------------------------------------------------------

def test_first_insert_creates_the_collection_then_inserts(plain, unique_db):
    start = last_ts(plain)
    plain[unique_db].c.insert_one({"_id": 1, "a": "x"})
    create, insert = entries(plain, unique_db, start)
    ui = uuid_of(plain, unique_db, "c")
    assert create["op"] == "c" and create["ns"] == f"{unique_db}.$cmd"
    assert create["o"] == {"create": "c", "idIndex": ID_INDEX}
    assert list(create["o"]) == ["create", "idIndex"]
    assert create["ui"] == ui
    check_common(create, ["op", "ns", "ui", "o", "ts", "t", "v", "wall"])
    assert insert["op"] == "i" and insert["ns"] == f"{unique_db}.c" and insert["ui"] == ui
    assert insert["o"] == {"_id": 1, "a": "x"} and insert["o2"] == {"_id": 1}
    check_common(insert, PLAIN_FIELDS)
    assert insert["ts"] > create["ts"]


def test_retryable_insert_many_chains_statements(mongo_client, unique_db):
    coll = mongo_client[unique_db].c
    coll.insert_one({"_id": 0})
    start = last_ts(mongo_client)
    coll.insert_many([{"_id": i, "n": i} for i in range(1, 4)])
    got = entries(mongo_client, unique_db, start)
    assert [e["o"] for e in got] == [{"_id": i, "n": i} for i in range(1, 4)]
    assert [e["stmtId"] for e in got] == [0, 1, 2]
    for e in got:
        check_common(e, RETRYABLE_FIELDS)
        assert isinstance(e["lsid"]["id"], Binary) and e["lsid"]["id"].subtype == 4
        assert isinstance(e["lsid"]["uid"], bytes) and len(e["lsid"]["uid"]) == 32
        assert isinstance(e["txnNumber"], Int64)
    assert len({e["txnNumber"] for e in got}) == 1
    assert got[0]["prevOpTime"] == {"ts": Timestamp(0, 0), "t": -1}
    assert got[1]["prevOpTime"]["ts"] == got[0]["ts"]
    assert got[2]["prevOpTime"]["ts"] == got[1]["ts"]
    assert got[0]["ts"] < got[1]["ts"] < got[2]["ts"]


def test_server_puts_id_first_and_generates_it(plain, unique_db):
    db = plain[unique_db]
    db.create_collection("c")
    start = last_ts(plain)
    db.command(SON([("insert", "c"), ("documents", [SON([("a", 1), ("_id", 5)]),
                                                    {"b": 2}])]))
    first, second = entries(plain, unique_db, start)
    assert list(first["o"]) == ["_id", "a"]
    assert list(second["o"]) == ["_id", "b"] and isinstance(second["o"]["_id"], ObjectId)
    assert second["o2"] == {"_id": second["o"]["_id"]}
    stored = db.get_collection("c", codec_options=ORDERED).find_one({"_id": 5})
    assert list(stored) == ["_id", "a"]


def test_id_projection_returns_each_id_unchanged(plain, unique_db):
    """``{_id: 1}`` (validation's scan of the source): exactly ``{_id}``, the
    value's BSON type kept, in ``_id`` order with or without a filter."""
    raw = plain[unique_db].get_collection(
        "c", codec_options=CodecOptions(document_class=RawBSONDocument))
    ids = [1, Int64(2), 2.5, "s", ObjectId("0123456789ab0123456789ab"), {"a": 1, "b": [1]},
           Binary(b"x", 0)]
    plain[unique_db].c.insert_many([{"_id": v, "pad": "p" * 100, "n": i}
                                    for i, v in enumerate(ids)])
    want = sorted(encode({"_id": v}) for v in ids)
    for projection in ({"_id": 1}, {"_id": True}, {"_id": 1.0}):
        got = [d.raw for d in raw.find({}, projection)]
        assert sorted(got) == want, projection
        assert len(got) == len(ids)
    filtered = [d.raw for d in raw.find({"n": {"$gte": 5}}, {"_id": 1})]
    assert sorted(filtered) == sorted(encode({"_id": v}) for v in ids[5:])


def test_duplicate_key_error_names_the_key(mongo_client, unique_db):
    coll = mongo_client[unique_db].c
    coll.insert_one({"_id": 7})
    with pytest.raises(DuplicateKeyError) as info:
        coll.insert_one({"_id": 7})
    assert info.value.code == 11000
    assert info.value.details["keyPattern"] == {"_id": 1}
    assert info.value.details["keyValue"] == {"_id": 7}


# -- updates, replacements, deletes ----------------------------------------------

def test_replacement_logs_the_full_document(plain, unique_db):
    coll = plain[unique_db].c
    coll.insert_one({"_id": 1, "a": 1})
    start = last_ts(plain)
    coll.replace_one({"_id": 1}, {"b": 2})
    (entry,) = entries(plain, unique_db, start)
    assert entry["op"] == "u" and entry["o"] == {"_id": 1, "b": 2}
    assert list(entry["o"]) == ["_id", "b"] and entry["o2"] == {"_id": 1}
    check_common(entry, PLAIN_FIELDS)


def test_operator_update_logs_a_v2_diff(plain, unique_db):
    coll = plain[unique_db].c
    coll.insert_one({"_id": 1, "a": 2})
    start = last_ts(plain)
    coll.update_one({"_id": 1}, {"$inc": {"a": 1}})
    coll.update_one({"_id": 1}, {"$set": {"a": 3}})  # changes nothing: no entry
    (entry,) = entries(plain, unique_db, start)
    assert entry["o"] == {"$v": 2, "diff": {"u": {"a": 3}}} and entry["o2"] == {"_id": 1}
    check_common(entry, PLAIN_FIELDS)


def test_update_of_id_is_refused(mongo_client, unique_db):
    coll = mongo_client[unique_db].c
    coll.insert_one({"_id": 1})
    with pytest.raises(OperationFailure) as info:
        coll.replace_one({"_id": 1}, {"_id": 2})
    assert info.value.code == 66


def test_upsert_inserts_and_multi_update_logs_each_document(plain, unique_db):
    coll = plain[unique_db].c
    coll.insert_many([{"_id": 1, "k": 1}, {"_id": 2, "k": 1}])
    start = last_ts(plain)
    coll.update_many({"k": 1}, {"$set": {"z": True}})
    coll.update_one({"_id": 9}, {"$set": {"k": 2}}, upsert=True)
    got = entries(plain, unique_db, start)
    assert [(e["op"], e["o2"]) for e in got] == [("u", {"_id": 1}), ("u", {"_id": 2}),
                                                 ("i", {"_id": 9})]
    assert got[0]["o"] == {"$v": 2, "diff": {"i": {"z": True}}}
    assert got[2]["o"] == {"_id": 9, "k": 2}


def test_delete_logs_the_id_only(plain, unique_db):
    coll = plain[unique_db].c
    coll.insert_many([{"_id": 1, "a": 1}, {"_id": 2, "a": 1}])
    start = last_ts(plain)
    coll.delete_many({"a": 1})
    got = entries(plain, unique_db, start)
    assert [(e["op"], e["o"]) for e in got] == [("d", {"_id": 1}), ("d", {"_id": 2})]
    for e in got:
        check_common(e, ["op", "ns", "ui", "o", "ts", "t", "v", "wall"])


# -- DDL ---------------------------------------------------------------------------

def test_create_with_options(plain, unique_db):
    db = plain[unique_db]
    start = last_ts(plain)
    db.create_collection("capped", capped=True, size=1000, max=10)
    db.create_collection("valid", validator={"a": {"$exists": True}},
                         validationLevel="moderate")
    capped, valid = entries(plain, unique_db, start)
    assert capped["o"] == {"create": "capped", "capped": True, "size": 1024, "max": 10,
                           "idIndex": ID_INDEX}
    assert list(capped["o"]) == ["create", "capped", "size", "max", "idIndex"]
    assert list(valid["o"]) == ["create", "validator", "validationLevel", "idIndex"]
    info = next(db.list_collections(filter={"name": "capped"}))
    assert info["options"] == {"capped": True, "size": 1024, "max": 10}
    assert info["info"]["uuid"].subtype == 4 and info["idIndex"] == ID_INDEX


def test_drop_logs_num_records(plain, unique_db):
    coll = plain[unique_db].c
    coll.insert_many([{"_id": i} for i in range(3)])
    ui = uuid_of(plain, unique_db, "c")
    start = last_ts(plain)
    coll.drop()
    (entry,) = entries(plain, unique_db, start)
    assert entry["o"] == {"drop": "c"} and entry["o2"] == {"numRecords": 3}
    assert type(entry["o2"]["numRecords"]) is int and entry["ui"] == ui
    check_common(entry, PLAIN_FIELDS)


def test_drop_database_drops_each_collection_first(plain, unique_db):
    db = plain[unique_db]
    db.a.insert_one({})
    db.b.insert_one({})
    start = last_ts(plain)
    plain.drop_database(unique_db)
    got = entries(plain, unique_db, start)
    assert sorted(e["o"]["drop"] for e in got[:-1]) == ["a", "b"]
    assert got[-1]["o"] == {"dropDatabase": 1} and "ui" not in got[-1]
    assert got[-1]["ns"] == f"{unique_db}.$cmd"


def test_rename_keeps_the_uuid(plain, unique_db):
    db = plain[unique_db]
    db.a.insert_one({"_id": 1})
    db.t.insert_one({"_id": 2})
    ui_a, ui_t = uuid_of(plain, unique_db, "a"), uuid_of(plain, unique_db, "t")
    start = last_ts(plain)
    db.a.rename("b")
    db.b.rename("t", dropTarget=True)
    plain_rename, drop_target = entries(plain, unique_db, start)
    assert plain_rename["o"] == {"renameCollection": f"{unique_db}.a",
                                 "to": f"{unique_db}.b", "stayTemp": False}
    assert plain_rename["ui"] == ui_a and "o2" not in plain_rename
    assert drop_target["o"] == {"renameCollection": f"{unique_db}.b",
                                "to": f"{unique_db}.t", "stayTemp": False,
                                "dropTarget": ui_t}
    assert drop_target["o2"] == {"numRecords": 1}
    assert uuid_of(plain, unique_db, "t") == ui_a
    assert list(db.t.find()) == [{"_id": 1}]


def test_rename_across_databases_copies(plain, unique_db):
    other = unique_db + "_x"
    try:
        plain[unique_db].a.insert_many([{"_id": 1}, {"_id": 2}])
        start = last_ts(plain)
        plain.admin.command("renameCollection", f"{unique_db}.a", to=f"{other}.b")
        into = entries(plain, other, start)
        assert into[0]["o"]["create"].startswith("tmp")
        assert into[0]["o"]["temp"] is True
        rename = [e for e in into if "renameCollection" in e["o"]][-1]
        assert re.fullmatch(rf"{other}\.tmp\w{{5}}\.renameCollection",
                            rename["o"]["renameCollection"])
        assert rename["o"]["to"] == f"{other}.b"
        (drop,) = entries(plain, unique_db, start)
        assert drop["o"] == {"drop": "a"} and drop["ts"] > rename["ts"]
        assert sorted(d["_id"] for d in plain[other].b.find()) == [1, 2]
    finally:
        plain.drop_database(other)


def test_index_builds(plain, unique_db):
    coll = plain[unique_db].c
    coll.insert_one({"_id": 1, "a": 1, "b": 1})
    empty = plain[unique_db].e
    plain[unique_db].create_collection("e")
    start = last_ts(plain)
    empty.create_index([("a", 1)], name="a_1")
    coll.create_index([("b", -1)], unique=True, name="b_-1")
    created, started, committed = entries(plain, unique_db, start)
    assert created["o"] == {"createIndexes": "e", "v": 2, "key": {"a": 1}, "name": "a_1"}
    assert list(created["o"]) == ["createIndexes", "v", "key", "name"]
    spec = {"v": 2, "unique": True, "key": {"b": -1}, "name": "b_-1"}
    assert list(started["o"]) == ["startIndexBuild", "indexBuildUUID", "indexes"]
    assert started["o"]["indexes"] == [spec] and list(started["o"]["indexes"][0]) == list(spec)
    assert committed["o"]["commitIndexBuild"] == "c"
    assert committed["o"]["indexBuildUUID"] == started["o"]["indexBuildUUID"]
    assert isinstance(started["o"]["indexBuildUUID"], Binary)
    assert started["o"]["indexBuildUUID"].subtype == 4
    assert committed["o"]["indexes"] == [spec]


def test_drop_index_and_coll_mod(plain, unique_db):
    coll = plain[unique_db].c
    coll.insert_one({"_id": 1, "t": 1})
    coll.create_index([("t", 1)], name="t_1", expireAfterSeconds=100)
    coll.create_index([("x", 1)], name="x_1")
    ui = uuid_of(plain, unique_db, "c")
    start = last_ts(plain)
    plain[unique_db].command("collMod", "c", index={"keyPattern": {"t": 1},
                                                    "expireAfterSeconds": 200})
    coll.drop_index("x_1")
    mod, dropped = entries(plain, unique_db, start)
    assert mod["o"] == {"collMod": "c", "index": {"name": "t_1", "expireAfterSeconds": 200}}
    assert isinstance(mod["o"]["index"]["expireAfterSeconds"], Int64)
    assert mod["o2"] == {"collectionOptions_old": {"uuid": ui},
                         "indexOptions_old": {"expireAfterSeconds": 100}}
    assert dropped["o"] == {"dropIndexes": "c", "index": "x_1"}
    assert dropped["o2"] == {"v": 2, "key": {"x": 1}, "name": "x_1"}
    names = [i["name"] for i in coll.list_indexes()]
    assert names == ["_id_", "t_1"]


def test_coll_mod_of_collection_options(plain, unique_db):
    db = plain[unique_db]
    db.create_collection("v", validator={"a": {"$type": "int"}})
    ui = uuid_of(plain, unique_db, "v")
    start = last_ts(plain)
    db.command(SON([("collMod", "v"), ("validationLevel", "moderate"),
                    ("validator", {"b": {"$exists": True}})]))
    (entry,) = entries(plain, unique_db, start)
    assert list(entry["o"]) == ["collMod", "validationLevel", "validator"]
    assert entry["o2"] == {"collectionOptions_old": {"uuid": ui,
                                                     "validator": {"a": {"$type": "int"}}}}
    options = next(db.list_collections(filter={"name": "v"}))["options"]
    assert options == {"validator": {"b": {"$exists": True}}, "validationLevel": "moderate"}


def test_unique_secondary_index_is_enforced(plain, unique_db):
    coll = plain[unique_db].c
    coll.create_index([("a", 1)], unique=True, name="a_1")
    coll.insert_one({"_id": 1, "a": 1})
    with pytest.raises(DuplicateKeyError) as info:
        coll.insert_one({"_id": 2, "a": 1})
    assert info.value.details["keyPattern"] == {"a": 1}
    assert info.value.details["keyValue"] == {"a": 1}
    coll.insert_one({"_id": 3, "a": 2})
    with pytest.raises(DuplicateKeyError):
        coll.update_one({"_id": 3}, {"$set": {"a": 1}})
    assert coll.find_one({"_id": 3}) == {"_id": 3, "a": 2}
    other = plain[unique_db].d
    other.insert_many([{"_id": 1, "b": 5}, {"_id": 2, "b": 5}])
    start = last_ts(plain)
    with pytest.raises(DuplicateKeyError):
        other.create_index([("b", 1)], unique=True, name="b_1")
    started, aborted = entries(plain, unique_db, start)
    assert "startIndexBuild" in started["o"] and aborted["o"]["abortIndexBuild"] == "d"
    assert aborted["o"]["indexBuildUUID"] == started["o"]["indexBuildUUID"]
    assert aborted["o"]["cause"]["code"] == 11000
    assert [i["name"] for i in other.list_indexes()] == ["_id_"]


# -- transactions --------------------------------------------------------------------

def test_transaction_commits_one_apply_ops(mongo_client, unique_db):
    coll = mongo_client[unique_db].c
    coll.insert_one({"_id": 0, "n": 0})
    ui = uuid_of(mongo_client, unique_db, "c")
    start = last_ts(mongo_client)
    with mongo_client.start_session() as session:
        with session.start_transaction():
            coll.insert_one({"_id": 1}, session=session)
            coll.update_one({"_id": 0}, {"$inc": {"n": 1}}, session=session)
            assert coll.count_documents({}, session=session) == 2
            coll.delete_one({"_id": 1}, session=session)
        with session.start_transaction():
            coll.insert_one({"_id": 2}, session=session)
            session.abort_transaction()
    (entry,) = entries(mongo_client, unique_db, start)
    assert entry["op"] == "c" and entry["ns"] == "admin.$cmd"
    assert list(entry) == ["lsid", "txnNumber", "op", "ns", "o", "ts", "t", "v", "wall",
                           "prevOpTime"]
    assert entry["prevOpTime"] == {"ts": Timestamp(0, 0), "t": -1}
    ops = entry["o"]["applyOps"]
    assert list(entry["o"]) == ["applyOps"]
    assert ops[0] == {"op": "i", "ns": f"{unique_db}.c", "ui": ui, "o": {"_id": 1},
                      "o2": {"_id": 1}}
    assert ops[1] == {"op": "u", "ns": f"{unique_db}.c", "ui": ui,
                      "o": {"$v": 2, "diff": {"u": {"n": 1}}}, "o2": {"_id": 0}}
    assert ops[2] == {"op": "d", "ns": f"{unique_db}.c", "ui": ui, "o": {"_id": 1}}
    assert sorted(d["_id"] for d in coll.find()) == [0]


# -- reads: tailing, batching, $natural ------------------------------------------------

def test_tailing_cursor_sees_a_write_within_a_second(mongo_client, unique_db):
    coll = mongo_client[unique_db].c
    coll.insert_one({"_id": "warm"})
    start = last_ts(mongo_client)
    cursor = oplog(mongo_client).find({"ts": {"$gt": start}},
                                      cursor_type=pymongo.CursorType.TAILABLE_AWAIT,
                                      oplog_replay=True).max_await_time_ms(5000)
    assert cursor.alive
    written: list[float] = []

    def write() -> None:
        time.sleep(0.3)
        written.append(time.monotonic())
        coll.insert_one({"_id": "tailed"})

    writer = threading.Thread(target=write)
    writer.start()
    found = None
    try:
        while cursor.alive and found is None:
            found = next((e for e in cursor if e["ns"] == f"{unique_db}.c"), None)
        seen = time.monotonic()
    finally:
        writer.join()
        cursor.close()
    assert found is not None and found["o"] == {"_id": "tailed"}
    assert seen - written[0] < 1.0


def test_natural_order_both_ways(mongo_client, unique_db):
    coll = mongo_client[unique_db].c
    coll.insert_many([{"_id": 3}, {"_id": 1}, {"_id": 2}])
    coll.update_one({"_id": 3}, {"$set": {"x": 1}})
    assert [d["_id"] for d in coll.find().sort("$natural", 1)] == [3, 1, 2]
    assert [d["_id"] for d in coll.find().sort("$natural", -1)] == [2, 1, 3]
    assert [d["_id"] for d in coll.find({"_id": {"$gte": 2}}).sort("_id", -1)] == [3, 2]
    newest = oplog(mongo_client).find_one({}, sort=[("$natural", -1)])
    assert newest["ts"] == last_ts(mongo_client)
    assert oplog(mongo_client).find_one({}, hint=[("$natural", -1)])["ts"] == newest["ts"]


class _Batches(monitoring.CommandListener):
    def __init__(self) -> None:
        self.replies: list[tuple[str, int, int]] = []

    def started(self, event) -> None:
        pass

    def succeeded(self, event) -> None:
        cursor = event.reply.get("cursor")
        if event.command_name in ("find", "getMore") and cursor:
            batch = cursor.get("firstBatch", cursor.get("nextBatch"))
            self.replies.append((event.command_name, len(batch), cursor["id"]))

    def failed(self, event) -> None:
        pass


def test_cursor_batches_and_get_more(mongo_uri, mongo_client, unique_db):
    mongo_client[unique_db].c.insert_many([{"_id": i, "pad": "x" * 100} for i in range(250)])
    listener = _Batches()
    client = pymongo.MongoClient(mongo_uri, event_listeners=[listener])
    try:
        ids = [d["_id"] for d in client[unique_db].c.find({}, batch_size=100).sort("_id", 1)]
        assert ids == list(range(250))
        counts = [(name, n) for name, n, _ in listener.replies]
        assert counts == [("find", 100), ("getMore", 100), ("getMore", 50)]
        assert listener.replies[0][2] != 0 and listener.replies[-1][2] == 0
        default = list(client[unique_db].c.find({"_id": {"$lt": 200}}))
        assert len(default) == 200 and listener.replies[3][1] == 101
        reply = client[unique_db].command("find", "c", batchSize=5)
        cursor_id = reply["cursor"]["id"]
        killed = client[unique_db].command("killCursors", "c", cursors=[cursor_id])
        assert killed["cursorsKilled"] == [cursor_id]
        with pytest.raises(OperationFailure) as info:
            client[unique_db].command("getMore", cursor_id, collection="c")
        assert info.value.code == 43
    finally:
        client.close()


def test_id_range_reads_return_raw_documents_in_id_order(mongo_client, unique_db):
    coll = mongo_client[unique_db].get_collection(
        "c", codec_options=CodecOptions(document_class=RawBSONDocument))
    mongo_client[unique_db].c.insert_many(
        [{"_id": i, "b": i, "a": 0} for i in (5, 1, 9, 3, "s", ObjectId())])
    got = list(coll.find({"_id": {"$gte": 2, "$lt": 9}}).sort("_id", 1))
    assert [d["_id"] for d in got] == [3, 5]
    assert list(got[0]) == ["_id", "b", "a"]
    assert [d["_id"] for d in coll.find({"_id": {"$in": [9, "s", 4]}})] == [9, "s"]


# -- catalog commands ---------------------------------------------------------------------

def test_unknown_command(mongo_client):
    with pytest.raises(OperationFailure) as info:
        mongo_client.admin.command("noSuchCommandAtAll")
    assert info.value.code == 59
    assert info.value.details["codeName"] == "CommandNotFound"
    assert info.value.details["errmsg"] == "no such command: 'noSuchCommandAtAll'"


def test_list_indexes_and_collections(mongo_client, unique_db):
    db = mongo_client[unique_db]
    db.c.create_index([("a", 1), ("b", -1)])
    db.create_collection("v", viewOn="c", pipeline=[{"$match": {"a": 1}}])
    assert [i["name"] for i in db.c.list_indexes()] == ["_id_", "a_1_b_-1"]
    infos = {i["name"]: i for i in db.list_collections()}
    assert infos["c"]["type"] == "collection" and infos["v"]["type"] == "view"
    assert infos["v"]["options"] == {"viewOn": "c", "pipeline": [{"$match": {"a": 1}}]}
    names = db.list_collection_names(filter={"type": "collection"})
    assert "c" in names and "v" not in names
    db.c.insert_many([{"a": 1}, {"a": 2}])
    assert [d["a"] for d in db.v.find()] == [1]


def test_db_hash_is_md5_of_documents_in_id_order(mongo_client, unique_db):
    db = mongo_client[unique_db]
    db.c.insert_many([{"_id": 3, "x": 1}, {"_id": 1}, {"_id": 2, "y": [1, 2]}])
    raw = db.get_collection("c", codec_options=CodecOptions(document_class=RawBSONDocument))
    expected = hashlib.md5(b"".join(d.raw for d in raw.find().sort("_id", 1))).hexdigest()
    reply = db.command("dbHash")
    assert reply["collections"]["c"] == expected
    overall = hashlib.md5("".join(reply["collections"][n]
                                  for n in sorted(reply["collections"])).encode())
    assert reply["md5"] == overall.hexdigest()
