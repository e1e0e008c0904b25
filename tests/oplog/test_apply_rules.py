"""Entry kinds and idempotency rules, one behaviour per test."""

from __future__ import annotations

from pathlib import Path

import bson
import pytest
from bson.int64 import Int64

from backupflows.errors import ResyncRequired
from backupflows.head.store import HeadStore
from backupflows.oplog.applier import Applier
from tests.oplog.helpers import Op, docs, index_specs, uuid

U1, U2, U3 = uuid(1), uuid(2), uuid(3)
ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}


@pytest.fixture
def head(tmp_path: Path) -> HeadStore:
    h = HeadStore(tmp_path / "head.db")
    yield h
    assert h.integrity_check() == []
    h.close()


def apply(head: HeadStore, *entries: bytes, batch_size: int = 1000) -> None:
    Applier(head).apply(list(entries), batch_size=batch_size)


def create(op: Op, db: str, name: str, ui=None, **options) -> bytes:
    return op.c(db, {"create": name, **options, "idIndex": ID_INDEX}, ui=ui)


def namespaces(head: HeadStore) -> list[str]:
    return [c.ns for c in head.collections()]


# -- CRUD idempotency --

def test_insert_of_existing_id_replaces(head: HeadStore) -> None:
    op = Op()
    apply(head, op.i("d.c", {"_id": 1, "v": "old"}), op.i("d.c", {"_id": 1.0, "v": "new"}))
    assert docs(head, "d", "c") == [{"_id": 1.0, "v": "new"}]  # 1 and 1.0 are one _id


def test_update_of_missing_document_is_recorded(head: HeadStore) -> None:
    op = Op()
    apply(head, create(op, "d", "c", U1),
          op.u("d.c", 7, {"$v": 2, "diff": {"u": {"a": 1}}}, ui=U1))
    c = head.require("d", "c")
    assert docs(head, "d", "c") == []
    assert [bson.decode(r) for r in head.missing(c)] == [{"_id": 7}]
    apply(head, op.i("d.c", {"_id": Int64(7), "a": 2}, ui=U1))  # a refetch/insert clears it
    assert list(head.missing(c)) == []


def test_missing_ids_can_be_resolved_by_refetch(head: HeadStore) -> None:
    op = Op()
    apply(head, create(op, "d", "c", U1), op.u("d.c", 1, {"$set": {"a": 1}}, ui=U1),
          op.u("d.c", 2, {"$set": {"a": 1}}, ui=U1))
    head.resolve_missing("d", "c", [bson.encode({"_id": 1, "a": 5})],
                         gone=[bson.encode({"_id": 2})])
    c = head.require("d", "c")
    assert list(head.missing(c)) == [] and docs(head, "d", "c") == [{"_id": 1, "a": 5}]


def test_delete_of_missing_document_does_nothing(head: HeadStore) -> None:
    op = Op()
    apply(head, create(op, "d", "c", U1), op.d("d.c", 3, ui=U1))
    assert docs(head, "d", "c") == [] and head.optime().increment == 2


def test_legacy_upsert_replacement_inserts(head: HeadStore) -> None:
    op = Op()
    apply(head, create(op, "d", "c", U1), op.u("d.c", 1, {"_id": 1, "a": 1}, ui=U1, b=True))
    assert docs(head, "d", "c") == [{"_id": 1, "a": 1}]


def test_update_kinds(head: HeadStore) -> None:
    op = Op()
    apply(head, op.i("d.c", {"_id": 1, "a": 1, "b": {"x": 1}, "arr": [1, 2, 3]}),
          op.u("d.c", 1, {"$v": 2, "diff": {"u": {"a": 2}, "sb": {"i": {"y": 2}},
                                            "sarr": {"a": True, "l": 2}}}),
          op.u("d.c", 1, {"$set": {"c": 3}, "$unset": {"a": True}}),
          op.u("d.c", 1, {"_id": 1, "z": 0}),
          op.u("d.c", 1, {"$v": 2, "diff": {"i": {"w": 1}}}))
    got = bson.decode(head.export(head.require("d", "c")).__next__(),
                      bson.CodecOptions(document_class=bson.SON))
    assert list(got.items()) == [("_id", 1), ("z", 0), ("w", 1)]


def test_internal_namespaces_are_skipped(head: HeadStore) -> None:
    op = Op()
    apply(head, op.i("config.system.sessions", {"_id": 1}), op.i("config.transactions", {"_id": 1}),
          op.i("config.image_collection", {"_id": 1}), op.i("config.system.preimages", {"_id": 1}),
          op.i("config.cache.chunks.x", {"_id": 1}), op.i("local.foo", {"_id": 1}),
          create(op, "config", "cache.x"), op.i("config.settings", {"_id": "balancer"}))
    assert namespaces(head) == ["config.settings"]


def test_from_migrate_is_skipped_only_when_merging_shards(head: HeadStore,
                                                          tmp_path: Path) -> None:
    op = Op()
    entry = op.i("d.c", {"_id": 1}, fromMigrate=True)
    Applier(head, skip_from_migrate=True).apply([entry])
    assert namespaces(head) == []
    Applier(head).apply([entry])
    assert docs(head, "d", "c") == [{"_id": 1}]


def test_noops_and_new_op_kinds_advance_the_position_only(head: HeadStore) -> None:
    op = Op()
    apply(head, op.n(), op.entry("km", "d.c", {}), op.entry("ci", "d.c", {}))
    assert namespaces(head) == [] and head.optime().increment == 3


# -- collections --

def test_create_with_options_keeps_field_order(head: HeadStore) -> None:
    op = Op()
    apply(head, op.c("d", {"create": "capped", "capped": True, "size": 4096, "max": 10,
                           "validator": {"a": {"$gt": 1}}, "validationLevel": "moderate",
                           "collation": {"locale": "fr"}, "idIndex": ID_INDEX}, ui=U1),
          op.c("d", {"create": "clustered", "clusteredIndex": {"key": {"_id": 1},
                                                               "unique": True}},
               ui=U2))
    capped = head.require("d", "capped")
    assert list(bson.decode(capped.options)) == ["capped", "size", "max", "validator",
                                                 "validationLevel", "collation"]
    assert capped.uuid == bytes(U1)
    assert index_specs(head, "d", "clustered") == []  # clustered: no _id index


def test_create_is_idempotent_and_adopts_a_uuid(head: HeadStore) -> None:
    head.ensure_collection("d", "c")  # e.g. from a dump without UUIDs
    op = Op()
    apply(head, create(op, "d", "c", U1), create(op, "d", "c", U1))
    assert head.require("d", "c").uuid == bytes(U1)
    assert len(index_specs(head, "d", "c")) == 1


def test_drop_and_drop_database(head: HeadStore) -> None:
    op = Op()
    apply(head, create(op, "a", "x", U1), create(op, "a", "y", U2), create(op, "b", "z", U3),
          op.i("a.x", {"_id": 1}, ui=U1), op.c("a", {"drop": "x"}, ui=U1),
          op.c("a", {"drop": "x"}, ui=U1), op.c("a", {"dropDatabase": 1}))
    assert namespaces(head) == ["b.z"]


def test_rename_within_and_across_databases(head: HeadStore) -> None:
    op = Op()
    apply(head, create(op, "a", "x", U1, temp=True), op.i("a.x", {"_id": 1}, ui=U1),
          op.c("a", {"renameCollection": "a.x", "to": "a.y", "stayTemp": True}, ui=U1))
    assert "temp" in bson.decode(head.require("a", "y").options)
    apply(head, op.c("a", {"renameCollection": "a.y", "to": "b.z", "stayTemp": False}, ui=U1))
    z = head.require("b", "z")
    assert namespaces(head) == ["b.z"] and z.uuid == bytes(U1)
    assert "temp" not in bson.decode(z.options) and docs(head, "b", "z") == [{"_id": 1}]


@pytest.mark.parametrize("drop_target", [U2, True])
def test_rename_with_drop_target(head: HeadStore, drop_target) -> None:
    op = Op()
    apply(head, create(op, "a", "src", U1), create(op, "a", "dst", U2),
          op.i("a.src", {"_id": "s"}, ui=U1), op.i("a.dst", {"_id": "d"}, ui=U2),
          op.c("a", {"renameCollection": "a.src", "to": "a.dst",
                     "dropTarget": drop_target}, ui=U1))
    assert namespaces(head) == ["a.dst"]
    assert docs(head, "a", "dst") == [{"_id": "s"}]


def test_rename_during_initial_sync_targets_by_uuid(head: HeadStore) -> None:
    """The slices were taken after ``a.x`` became ``a.y``; the oplog from T0
    still names ``a.x``. Entries find the collection by UUID, and the later
    create of a new ``a.x`` does not receive the old entries."""
    op = Op()
    oplog = [op.i("a.x", {"_id": 1, "v": 1}, ui=U1),
             op.u("a.x", 1, {"$v": 2, "diff": {"u": {"v": 2}}}, ui=U1),
             op.c("a", {"renameCollection": "a.x", "to": "a.y"}, ui=U1),
             create(op, "a", "x", U2),
             op.i("a.x", {"_id": 9}, ui=U2),
             op.u("a.y", 1, {"$v": 2, "diff": {"u": {"v": 3}}}, ui=U1)]
    # the head built from slices: a.y (U1) with the document as of the end,
    # and the new a.x (U2)
    head.ensure_collection("a", "y", uuid=bytes(U1))
    head.load_slice("a", "y", [bson.encode({"_id": 1, "v": 3})])
    head.ensure_collection("a", "x", uuid=bytes(U2))
    apply(head, *oplog)
    assert docs(head, "a", "y") == [{"_id": 1, "v": 3}]
    assert docs(head, "a", "x") == [{"_id": 9}]
    assert head.require("a", "y").uuid == bytes(U1)


def test_entries_of_a_collection_dropped_later_are_skipped(head: HeadStore) -> None:
    op = Op()
    old = [op.i("a.x", {"_id": "old"}, ui=U1), op.c("a", {"drop": "x"}, ui=U1)]
    head.ensure_collection("a", "x", uuid=bytes(U2))  # recreated before the slices
    apply(head, *old)
    assert docs(head, "a", "x") == [] and namespaces(head) == ["a.x"]


def test_create_over_a_later_collection_moves_it_aside_until_it_returns(
        head: HeadStore) -> None:
    op = Op()
    entries = [create(op, "a", "x", U1), op.c("a", {"drop": "x"}, ui=U1),
               op.c("a", {"create": "tmp1", "idIndex": ID_INDEX}, ui=U2),
               op.c("a", {"renameCollection": "a.tmp1", "to": "a.x"}, ui=U2)]
    apply(head, *entries)
    assert [(c.ns, c.uuid) for c in head.collections()] == [("a.x", bytes(U2))]
    apply(head, *entries)  # replayed over its own end state
    assert [(c.ns, c.uuid) for c in head.collections()] == [("a.x", bytes(U2))]


def test_collmod_options_take_their_canonical_place(head: HeadStore) -> None:
    op = Op()
    apply(head, op.c("d", {"create": "c", "validator": {"a": 1}, "idIndex": ID_INDEX}, ui=U1),
          op.c("d", {"collMod": "c", "validationAction": "warn",
                     "changeStreamPreAndPostImages": {"enabled": True}}, ui=U1),
          op.c("d", {"collMod": "c", "validator": {"b": 1}, "validationLevel": "off"}, ui=U1))
    opts = bson.decode(head.require("d", "c").options)
    assert list(opts.items()) == [("changeStreamPreAndPostImages", {"enabled": True}),
                                  ("validator", {"b": 1}), ("validationLevel", "off"),
                                  ("validationAction", "warn")]
    apply(head, op.c("d", {"collMod": "c", "changeStreamPreAndPostImages": {"enabled": False},
                           "validator": {}}, ui=U1))
    assert list(bson.decode(head.require("d", "c").options)) == [
        "validationLevel", "validationAction"]


def test_convert_to_capped_and_emptycapped(head: HeadStore) -> None:
    op = Op()
    apply(head, create(op, "d", "c", U1), op.i("d.c", {"_id": 1}, ui=U1),
          op.c("d", {"convertToCapped": "c", "size": 1e6}, ui=U1))
    c = head.require("d", "c")
    assert bson.decode(c.options) == {"capped": True, "size": 1000000}
    apply(head, op.c("d", {"emptycapped": "c"}, ui=U1))
    c = head.require("d", "c")
    assert docs(head, "d", "c") == [] and c.count == 0


def test_import_collection_requires_resync(head: HeadStore) -> None:
    op = Op()
    good = create(op, "d", "c", U1)
    with pytest.raises(ResyncRequired, match="importCollection"):
        apply(head, good, op.c("d", {"importCollection": "c", "collectionProperties": {}}))
    assert namespaces(head) == ["d.c"]


# -- indexes --

def test_index_lifecycle(head: HeadStore) -> None:
    op = Op()
    apply(head, create(op, "d", "c", U1),
          op.c("d", {"createIndexes": "c", "v": 2, "key": {"a": 1}, "name": "a_1",
                     "unique": True}, ui=U1),
          op.c("d", {"createIndexes": "c", "v": 2, "key": {"b": 1.0, "c": -1},
                     "name": "b_1_c_-1"}, ui=U1),
          op.c("d", {"startIndexBuild": "c", "indexBuildUUID": U3,
                     "indexes": [{"v": 2, "key": {"t": 1}, "name": "t_1"}]}, ui=U1))
    c = head.require("d", "c")
    assert len(head.index_builds(c)) == 1  # started, not yet an index
    assert [s["name"] for s in index_specs(head, "d", "c")] == ["_id_", "a_1", "b_1_c_-1"]
    apply(head, op.c("d", {"commitIndexBuild": "c", "indexBuildUUID": U3,
                           "indexes": [{"v": 2, "key": {"t": 1}, "name": "t_1"}]}, ui=U1),
          op.c("d", {"collMod": "c", "index": {"keyPattern": {"t": 1.0},
                                               "expireAfterSeconds": 60}}, ui=U1),
          op.c("d", {"dropIndexes": "c", "index": {"b": 1, "c": -1}}, ui=U1))
    specs = index_specs(head, "d", "c")
    assert [s["name"] for s in specs] == ["_id_", "a_1", "t_1"]
    assert specs[2]["expireAfterSeconds"] == 60 and head.index_builds(c) == []
    apply(head, op.c("d", {"dropIndexes": "c", "index": "*"}, ui=U1))
    assert [s["name"] for s in index_specs(head, "d", "c")] == ["_id_"]


def test_drop_indexes_by_list_and_legacy_name(head: HeadStore) -> None:
    op = Op()
    entries = [create(op, "d", "c", U1)] + [
        op.c("d", {"createIndexes": "c", "v": 2, "key": {f: 1}, "name": f"{f}_1"}, ui=U1)
        for f in "abc"]
    apply(head, *entries, op.c("d", {"dropIndexes": "c", "index": ["a_1", "b_1"]}, ui=U1),
          op.c("d", {"deleteIndexes": "c", "index": "c_1"}, ui=U1))
    assert [s["name"] for s in index_specs(head, "d", "c")] == ["_id_"]


# -- views and time series --

def test_views_from_create_and_from_system_views(head: HeadStore) -> None:
    op = Op()
    apply(head, create(op, "d", "c", U1),
          op.c("d", {"create": "v1", "viewOn": "c", "pipeline": [{"$match": {"a": 1}}]}),
          op.i("d.system.views", {"_id": "d.v1", "viewOn": "c",
                                  "pipeline": [{"$match": {"a": 1}}]}, ui=U2),
          op.i("d.system.views", {"_id": "d.v2", "viewOn": "c", "pipeline": []}, ui=U2),
          op.u("d.system.views", "d.v2", {"$v": 2, "diff": {"u": {"pipeline": [
              {"$project": {"a": 1}}]}}}, ui=U2))
    v1, v2 = head.require("d", "v1"), head.require("d", "v2")
    assert (v1.type, v2.type) == ("view", "view")
    assert bson.decode(v2.options) == {"viewOn": "c", "pipeline": [{"$project": {"a": 1}}]}
    apply(head, op.d("d.system.views", "d.v1", ui=U2),
          op.c("d", {"collMod": "v2", "viewOn": "c", "pipeline": []}))
    assert namespaces(head) == ["d.c", "d.v2"]
    assert bson.decode(head.require("d", "v2").options)["pipeline"] == []


def test_time_series_collection(head: HeadStore) -> None:
    op = Op()
    ts_opts = {"timeField": "t", "metaField": "m", "granularity": "seconds",
               "bucketMaxSpanSeconds": 3600}
    apply(head, op.c("d", {"create": "system.buckets.w", "validator": {}, "clusteredIndex": True,
                           "timeseries": ts_opts}, ui=U1),
          op.i("d.system.views", {"_id": "d.w", "viewOn": "system.buckets.w",
                                  "pipeline": []}, ui=U2),
          op.i("d.system.buckets.w", {"_id": 1, "control": {"version": 1}}, ui=U1),
          op.c("d", {"collMod": "system.buckets.w", "timeseries": {"granularity": "minutes"}},
               ui=U1))
    assert head.require("d", "w").type == "timeseries"
    opts = bson.decode(head.require("d", "system.buckets.w").options)
    assert opts["timeseries"]["granularity"] == "minutes"
    assert list(opts["timeseries"]) == list(ts_opts)
    assert len(docs(head, "d", "system.buckets.w")) == 1


# -- transactions --

def _session(n: int) -> dict:
    return {"lsid": {"id": uuid(100 + n)}, "txnNumber": Int64(n)}


def test_partial_transaction_survives_batches_and_restart(tmp_path: Path) -> None:
    op = Op()
    s = _session(1)
    part1 = op.c("admin", {"applyOps": [{"op": "i", "ns": "d.c", "o": {"_id": 1}}],
                           "partialTxn": True}, **s)
    other = op.i("d.c", {"_id": 50})
    part2 = op.c("admin", {"applyOps": [{"op": "i", "ns": "d.c", "o": {"_id": 2}}],
                           "partialTxn": True}, **s)
    final = op.c("admin", {"applyOps": [{"op": "u", "ns": "d.c", "o2": {"_id": 1},
                                         "o": {"$set": {"done": True}}}],
                           "count": Int64(3)}, **s)
    path = tmp_path / "h.db"
    with HeadStore(path) as head:
        apply(head, part1, other, part2, batch_size=1)
        assert docs(head, "d", "c") == [{"_id": 50}]  # nothing of the txn yet
    with HeadStore(path) as head:  # a restart between the parts and the commit
        apply(head, final)
        assert docs(head, "d", "c") == [{"_id": 1, "done": True}, {"_id": 2}, {"_id": 50}]
        assert head.conn.execute("SELECT COUNT(*) FROM txn_entries").fetchone()[0] == 0


@pytest.mark.parametrize("commit", [True, False])
def test_prepared_transaction(head: HeadStore, commit: bool) -> None:
    op = Op()
    s = _session(2)
    prepare = op.c("admin", {"applyOps": [{"op": "i", "ns": "d.c", "o": {"_id": 1}}],
                             "prepare": True}, **s)
    end = op.c("admin", {"commitTransaction": 1, "commitTimestamp": op.ts()} if commit
               else {"abortTransaction": 1}, **s)
    apply(head, prepare)
    assert docs(head, "d", "c") == []
    apply(head, end)
    assert docs(head, "d", "c") == ([{"_id": 1}] if commit else [])


def test_transaction_with_ddl_inside(head: HeadStore) -> None:
    op = Op()
    apply(head, op.c("admin", {"applyOps": [
        {"op": "c", "ns": "d.$cmd", "ui": U1, "o": {"create": "c", "idIndex": ID_INDEX}},
        {"op": "c", "ns": "d.$cmd", "ui": U1, "o": {"createIndexes": "c", "v": 2,
                                                    "key": {"a": 1}, "name": "a_1"}},
        {"op": "i", "ns": "d.c", "ui": U1, "o": {"_id": 1, "a": 1}}]}, **_session(3)))
    assert docs(head, "d", "c") == [{"_id": 1, "a": 1}]
    assert [s["name"] for s in index_specs(head, "d", "c")] == ["_id_", "a_1"]


def test_insert_over_a_committed_document_in_later_batches(head: HeadStore) -> None:
    """Inserts are written without reading first; one that meets a committed
    document (fuzzy initial sync) still replaces it and keeps the hash right,
    also when the same batch deletes it again."""
    op = Op()
    apply(head, *[op.i("d.c", {"_id": i, "v": 0}) for i in range(5)])
    apply(head, op.i("d.c", {"_id": 1, "v": 1}), op.i("d.c", {"_id": 9, "v": 1}),
          op.i("d.c", {"_id": 2, "v": 1}), op.d("d.c", 2), op.i("d.c", {"_id": 3, "v": 1}),
          op.u("d.c", 3, {"$v": 2, "diff": {"u": {"v": 2}}}))
    assert docs(head, "d", "c") == [{"_id": 0, "v": 0}, {"_id": 1, "v": 1}, {"_id": 3, "v": 2},
                                    {"_id": 4, "v": 0}, {"_id": 9, "v": 1}]
    assert head.require("d", "c").count == 5  # integrity_check at teardown
