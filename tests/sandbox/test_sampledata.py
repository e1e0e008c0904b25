"""Sample data generator, write load and fingerprints (runs against the
sandbox, or unchanged against a real replica set given by
BACKUPFLOWS_TEST_MONGODB_URI, except the fault-injection test)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator

import bson
import pymongo
import pytest
from bson.binary import Binary
from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument

from backupflows.errors import BackupflowsError
from backupflows.sandbox.sampledata import WriteLoad, fingerprint, generate
from backupflows.sandbox.sampledocs import KINDS, MAX_SIZE, MIN_SIZE
from backupflows.sandbox.writeload import DDL_STEPS, WRITE_KINDS

MB = 1024 * 1024
RAW = CodecOptions(document_class=RawBSONDocument)


@pytest.fixture
def dbs(mongo_client: pymongo.MongoClient) -> Iterator[list[str]]:
    """Three database names unique to the test, dropped afterwards."""
    names = [f"bfsample_{uuid.uuid4().hex[:8]}_{i}" for i in range(3)]
    yield names
    for name in names:
        mongo_client.drop_database(name)


def by_collection(client: pymongo.MongoClient, db: str) -> dict[str, tuple[int, str]]:
    prints = fingerprint(client, [f"{db}.{kind}" for kind in KINDS])
    return {ns.split(".", 1)[1]: (h.count, h.hexdigest()) for ns, h in prints.items()}


def newest_ts(client: pymongo.MongoClient):
    return client.local["oplog.rs"].find_one(sort=[("$natural", -1)])["ts"]


def oplog_since(client: pymongo.MongoClient, ts, namespaces: list[str]) -> list[dict]:
    return list(client.local["oplog.rs"].find({"ts": {"$gt": ts}, "ns": {"$in": namespaces}}))


# -- generate -----------------------------------------------------------------

def test_generate_is_deterministic_for_a_seed(mongo_client, dbs):
    first = generate(mongo_client, databases=[dbs[0]], target_bytes=2 * MB, seed=7)
    again = generate(mongo_client, databases=[dbs[1]], target_bytes=2 * MB, seed=7)
    other = generate(mongo_client, databases=[dbs[2]], target_bytes=2 * MB, seed=8)

    assert first.documents == again.documents and first.bytes == again.bytes
    assert other.documents > 0
    a, b, c = (by_collection(mongo_client, db) for db in dbs)
    assert set(a) == set(KINDS)
    assert a == b
    assert all(a[kind][1] != c[kind][1] for kind in KINDS)


def test_generated_documents_have_the_id_mix_shapes_and_sizes(mongo_client, dbs):
    report = generate(mongo_client, databases=dbs[:2], target_bytes=8 * MB, seed=1)

    assert len(report.namespaces) == 2 * len(KINDS)
    assert 8 * MB <= report.bytes <= 8 * MB + len(report.namespaces) * MAX_SIZE
    assert report.mb_per_s > 0
    sizes, id_types, value_types = [], Counter(), Counter()
    for ns, count in report.namespaces.items():
        db, coll = ns.split(".", 1)
        docs = list(mongo_client[db].get_collection(coll, codec_options=RAW).find())
        assert len(docs) == count
        for raw in docs:
            sizes.append(len(raw.raw))
            doc = bson.decode(raw.raw)
            id_types[_type_name(doc["_id"])] += 1
            value_types.update(_type_name(v) for v in _walk(doc))
    assert sum(sizes) == report.bytes and len(sizes) == report.documents
    assert set(id_types) == {"objectid", "int", "int64", "str", "uuid", "dict"}
    assert {"dict", "list", "datetime", "decimal", "binary", "float", "bool"} <= set(value_types)
    assert MIN_SIZE <= min(sizes) < 150 and 50_000 < max(sizes) <= MAX_SIZE
    small = sum(s < 1000 for s in sizes) / len(sizes)
    assert 0.55 < small < 0.85, "most documents are small"
    assert sum(s > 10_000 for s in sizes) >= 0.02 * len(sizes), "a tail of large ones"


def _type_name(value: object) -> str:
    if isinstance(value, Binary):
        return "uuid" if value.subtype == 4 else "binary"
    return {ObjectId: "objectid", Int64: "int64", Decimal128: "decimal", bytes: "binary"}.get(
        type(value), type(value).__name__)


def _walk(value: object) -> Iterator[object]:
    """Every value inside a document, nested ones included."""
    children = value.values() if isinstance(value, dict) else value if isinstance(
        value, list) else ()
    for child in children:
        yield child
        yield from _walk(child)


def test_generate_refuses_bad_input_and_filled_collections(mongo_client, dbs):
    generate(mongo_client, databases=[dbs[0]], collections=["orders"], target_bytes=10_000)
    with pytest.raises(BackupflowsError, match=rf"{dbs[0]}\.orders already holds documents"):
        generate(mongo_client, databases=[dbs[0]], collections=["orders"], target_bytes=10_000)
    with pytest.raises(ValueError, match="kinds"):
        generate(mongo_client, databases=[dbs[1]], collections=["nope"])
    with pytest.raises(ValueError, match="database"):
        generate(mongo_client, databases="single_string")
    with pytest.raises(ValueError, match="invalid sample database"):
        generate(mongo_client, databases=["local"])
    with pytest.raises(ValueError, match="positive"):
        generate(mongo_client, databases=[dbs[1]], target_bytes=0)


# -- fingerprint --------------------------------------------------------------

def test_fingerprint_sees_every_change(mongo_client, dbs):
    generate(mongo_client, databases=[dbs[0]], collections=["orders", "events"],
             target_bytes=200_000, seed=3)
    namespaces = [f"{dbs[0]}.orders", f"{dbs[0]}.events", f"{dbs[0]}.absent"]
    before = fingerprint(mongo_client, namespaces)
    orders = mongo_client[dbs[0]].orders
    assert before[f"{dbs[0]}.absent"].count == 0
    assert before[f"{dbs[0]}.orders"].count == orders.count_documents({})

    orders.update_one({"_id": 1}, {"$inc": {"qty_total": 1}})
    changed = fingerprint(mongo_client, namespaces)
    assert changed[f"{dbs[0]}.orders"].count == before[f"{dbs[0]}.orders"].count
    assert changed[f"{dbs[0]}.orders"] != before[f"{dbs[0]}.orders"]
    assert changed[f"{dbs[0]}.events"] == before[f"{dbs[0]}.events"]

    orders.delete_one({"_id": 2})
    assert fingerprint(mongo_client, namespaces)[f"{dbs[0]}.orders"].count == (
        before[f"{dbs[0]}.orders"].count - 1)
    assert f"{dbs[0]}.orders" in fingerprint(mongo_client)  # default: every user collection
    with pytest.raises(ValueError, match="db.collection"):
        fingerprint(mongo_client, ["nodot"])


# -- write load ---------------------------------------------------------------

# Collections whose _id is not a UUID (see test_write_load_on_uuid_ids).
LOADED = ("orders", "customers", "events", "metrics")


def test_write_load_runs_at_the_rate_with_every_kind_of_write(mongo_client, dbs):
    generate(mongo_client, databases=[dbs[0]], collections=LOADED, target_bytes=MB, seed=5)
    namespaces = [f"{dbs[0]}.{c}" for c in LOADED]
    start_ts = newest_ts(mongo_client)

    load = WriteLoad(mongo_client, namespaces, rate_per_s=250, seed=5).start()
    time.sleep(1.6)
    stats = load.stop()

    assert not load.running
    assert stats.errors == 0, stats.error_types
    assert 0.5 * 250 <= stats.rate <= 1.3 * 250, stats
    assert all(stats.counts[kind] > 0 for kind in WRITE_KINDS), stats.counts
    entries = oplog_since(mongo_client, start_ts, namespaces)
    assert len(entries) == stats.writes  # one entry per write, nothing after stop
    kinds = Counter(_entry_kind(e) for e in entries)
    assert kinds["i"] == stats.counts["insert"]
    assert kinds["d"] == stats.counts["delete"]
    assert kinds["replace"] == stats.counts["replace"]
    assert kinds["diff"] == sum(stats.counts[k] for k in ("set", "inc", "push", "grow"))
    grown = [e for e in entries if _entry_kind(e) == "diff" and "notes" in str(e["o"])]
    assert grown, "some updates grow documents by a note"
    assert any(len(doc.raw) > 1024 for doc in _docs_with_notes(mongo_client, namespaces))

    time.sleep(0.3)
    assert oplog_since(mongo_client, start_ts, namespaces) == entries, "stopped means stopped"


def _entry_kind(entry: dict) -> str:
    if entry["op"] == "u":
        return "diff" if entry["o"].get("$v") == 2 else "replace"
    return entry["op"]


def _docs_with_notes(client: pymongo.MongoClient, namespaces: list[str]) -> list:
    found = []
    for ns in namespaces:
        db, coll = ns.split(".", 1)
        found += client[db].get_collection(coll, codec_options=RAW).find(
            {"notes.0": {"$exists": True}})
    return found


def test_write_load_ddl_now_and_then(mongo_client, dbs):
    generate(mongo_client, databases=[dbs[0]], collections=["events"], target_bytes=100_000)
    start_ts = newest_ts(mongo_client)
    with WriteLoad(mongo_client, [f"{dbs[0]}.events"], rate_per_s=50, seed=2,
                   ddl_interval=0.04) as load:
        deadline = time.monotonic() + 10
        while load.stats.counts["drop_collection"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    stats = load.stats

    assert stats.errors == 0, stats.error_types
    assert all(stats.counts[step] >= 2 for step in DDL_STEPS[:-1]), stats.counts
    commands = Counter(next(iter(e["o"])) for e in mongo_client.local["oplog.rs"].find(
        {"ts": {"$gt": start_ts}, "op": "c", "ns": f"{dbs[0]}.$cmd"}))
    assert commands["create"] >= 2 and commands["renameCollection"] >= 2
    assert commands["dropIndexes"] >= 2 and commands["drop"] >= 2
    assert commands["createIndexes"] + commands["commitIndexBuild"] >= 2
    left = [c for c in mongo_client[dbs[0]].list_collection_names() if c.startswith("wl_ddl")]
    assert len(left) <= 1, "scratch collections are dropped at the end of each round"


@pytest.mark.sandbox_only
def test_write_load_counts_transient_errors_and_goes_on(sandbox, dbs):
    client: pymongo.MongoClient = pymongo.MongoClient(sandbox.uri, retryWrites=False)
    try:
        generate(client, databases=[dbs[0]], collections=["orders"], target_bytes=50_000)
        with WriteLoad(client, [f"{dbs[0]}.orders"], rate_per_s=200, seed=4) as load:
            time.sleep(0.2)
            sandbox.fail_commands(["update", "insert", "delete"], error_code=91, times=5)
            time.sleep(0.3)
            sandbox.close_all_connections()
            time.sleep(0.4)
        stats = load.stats
    finally:
        client.close()
    assert stats.error_types["NotPrimaryError"] + stats.error_types["OperationFailure"] >= 5
    assert stats.errors >= 5
    assert stats.writes > 0.5 * 200 * 0.9, stats


def test_write_load_on_uuid_ids(mongo_client, dbs):
    generate(mongo_client, databases=[dbs[0]], collections=["sessions"], target_bytes=50_000)
    with WriteLoad(mongo_client, [f"{dbs[0]}.sessions"], rate_per_s=100, seed=1,
                   mix={"set": 1, "delete": 1}) as load:
        time.sleep(0.3)
    assert load.stats.errors == 0, load.stats.error_types
    assert load.stats.counts["set"] > 0


def test_write_load_refuses_bad_arguments(mongo_client):
    with pytest.raises(ValueError, match="db.collection"):
        WriteLoad(mongo_client, ["nodot"], 10)
    with pytest.raises(ValueError, match="non-empty"):
        WriteLoad(mongo_client, "db.coll", 10)
    with pytest.raises(ValueError, match="rate_per_s"):
        WriteLoad(mongo_client, ["db.coll"], 0)
    with pytest.raises(ValueError, match="mix"):
        WriteLoad(mongo_client, ["db.coll"], 10, mix={"explode": 1})
    with pytest.raises(ValueError, match="ddl_interval"):
        WriteLoad(mongo_client, ["db.coll"], 10, ddl_interval=0)
