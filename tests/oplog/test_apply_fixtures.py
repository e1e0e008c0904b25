"""The real oplogs of mongo-tools reach the end states their README gives,
applied directly with the Applier (dump fixtures: test_replay_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import bson
import pytest
from bson import json_util
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.son import SON

from backupflows.head.store import DEFAULT_ID_INDEX, HeadStore
from backupflows.oplog.applier import Applier
from tests.oplog.helpers import (
    TESTDATA,
    data_state,
    docs,
    ejson_entry,
    file_entries,
    index_specs,
    txn_cases,
)


@pytest.fixture
def head(tmp_path: Path) -> HeadStore:
    h = HeadStore(tmp_path / "head.db")
    yield h
    assert h.integrity_check() == []
    h.close()


def apply_file(head: HeadStore, rel: str, batch_size: int = 3) -> None:
    Applier(head).apply(file_entries(TESTDATA / rel), batch_size=batch_size)


def names(specs: list[dict]) -> list[str]:
    return [s["name"] for s in specs]


def test_create_indexes_gives_three_indexes(head: HeadStore) -> None:
    apply_file(head, "create_indexes/oplog.bson")
    specs = index_specs(head, "create_indexes", "test")
    assert names(specs) == ["_id_", "a_1", "b_1"]
    assert specs[2]["partialFilterExpression"] == {"a": 1.0}


def test_commit_indexes_build(head: HeadStore) -> None:
    apply_file(head, "commit_indexes_build/oplog.bson")
    assert [d["a"] for d in docs(head, "commit_index", "test")] == [1.0]
    specs = index_specs(head, "commit_index", "test")
    assert names(specs) == ["_id_", "a_1", "b_1"]
    assert specs[2]["partialFilterExpression"] == {"a": 1.0}
    c = head.require("commit_index", "test")
    assert head.index_builds(c) == []
    # the last entries reuse earlier timestamps: the optime never moves back
    assert head.optime().seconds == 1588114270


def test_aborted_index_build_creates_nothing(head: HeadStore) -> None:
    head.ensure_collection("test", "skip_index_entries")
    apply_file(head, "oplog_ignore_index/oplog.bson")
    assert names(index_specs(head, "test", "skip_index_entries")) == ["_id_"]
    assert head.index_builds(head.require("test", "skip_index_entries")) == []


def test_2014_noops_create_and_double_v(head: HeadStore) -> None:
    apply_file(head, "dump_with_noop_in_oplog/oplog.bson")
    got = docs(head, "test", "data")
    assert got == [{"_id": ObjectId("5473b75c8e32da600b686ed7"), "a": 1.0}]


def test_tools_2002_compound_index(head: HeadStore) -> None:
    apply_file(head, "tools-2002/oplog.bson")
    assert names(index_specs(head, "foo", "bar")) == ["_id_", "a_1_b_1"]


def test_partial_skips_keep_only_user_data(head: HeadStore) -> None:
    apply_file(head, "oplog_partial_skips/oplog.bson")
    assert [c.ns for c in head.collections()] == ["db3.c1"]
    assert len(docs(head, "db3", "c1")) == 5


def test_vectored_insert(head: HeadStore) -> None:
    apply_file(head, "oplogs/bson/vectored_insert.bson")
    assert [d["_id"] for d in docs(head, "mongodump_test_db", "coll1")] == [100, 200]


def test_linked_vectored_inserts(head: HeadStore) -> None:
    apply_file(head, "oplogs/bson/linked_vectored_inserts.bson", batch_size=1)
    got = [d["_id"] for d in docs(head, "mongodump_test_db", "coll1")]
    assert got == [300, 400, 500, 600, 700]


def test_validator_is_metadata_only(head: HeadStore) -> None:
    apply_file(head, "oplogs/bson/bypassDocumentValidation.bson")
    got = docs(head, "mongodump_test_db", "coll1")
    assert [d["testField"] for d in got] == ["valid", "invalid", "also_invalid"]
    c = head.require("mongodump_test_db", "coll1")
    assert "$jsonSchema" in bson.decode(c.options)["validator"]


def test_index_uniqueness_collmods(head: HeadStore) -> None:
    apply_file(head, "oplogs/bson/collMod_indexUniqueness.bson")
    specs = index_specs(head, "mongodump_test_db", "coll1")
    assert len(specs) == 5
    assert all(s.get("prepareUnique") is True for s in specs[1:])
    assert all("unique" not in s for s in specs)  # forceNonUnique undid unique
    assert [s.get("hidden") for s in specs[1:]] == [None, True, None, True]


def _foo(head: HeadStore, ttl: bool = False) -> None:
    f_1 = SON([("v", 2), ("key", SON([("f", 1.0)])), ("name", "f_1")])
    if ttl:
        f_1["expireAfterSeconds"] = 1000
    head.ensure_collection("test", "foo", indexes=[DEFAULT_ID_INDEX, bson.encode(f_1)])
    head.load_slice("test", "foo", [bson.encode({"_id": 1, "f": 1})])


@pytest.mark.parametrize("rel, expect", [
    ("create_index.bson", ["_id_", "f_1"]),
    ("drop_index.bson", ["_id_"]),
    ("commit_index.bson", ["_id_", "f_1", "a_1"]),
])
def test_single_index_ddl(head: HeadStore, rel: str, expect: list[str]) -> None:
    _foo(head)
    apply_file(head, f"oplogs/bson/{rel}")
    assert names(index_specs(head, "test", "foo")) == expect


def test_collmod_ttl(head: HeadStore) -> None:
    _foo(head, ttl=True)
    apply_file(head, "oplogs/bson/collMod.bson")
    raw_spec = head.indexes(head.require("test", "foo"))[1]
    spec = bson.decode(raw_spec)
    assert spec["expireAfterSeconds"] == 3600
    assert isinstance(spec["expireAfterSeconds"], Int64)  # as the server stores it
    assert list(spec) == ["v", "key", "name", "expireAfterSeconds"]


def test_collmod_with_hidden(head: HeadStore) -> None:
    _foo(head, ttl=True)
    apply_file(head, "oplogs/bson/collMod_with_hidden.bson")
    spec = index_specs(head, "test", "foo")[1]
    assert spec["expireAfterSeconds"] == 3600 and spec["hidden"] is True


def test_drop_collection(head: HeadStore) -> None:
    _foo(head)
    head.ensure_collection("test", "other")
    apply_file(head, "oplogs/bson/drop_collection.bson")
    assert [c.ns for c in head.collections()] == ["test.other"]


def test_drop_database(head: HeadStore) -> None:
    _foo(head)
    head.ensure_collection("keep", "me")
    apply_file(head, "oplogs/bson/drop_db.bson")
    assert [c.ns for c in head.collections()] == ["keep.me"]


def test_json_twins_give_the_bson_results(tmp_path: Path) -> None:
    """oplogs/oplog.json: the DDL entries in Extended JSON, applied in order
    (create foo, index builds, drop, create again, indexes, collMods...)."""
    lines = (TESTDATA / "oplogs" / "oplog.json").read_text().splitlines()
    raws = [ejson_entry(line) for line in lines if line.strip()]
    with HeadStore(tmp_path / "a.db") as a, HeadStore(tmp_path / "b.db") as b:
        Applier(a).apply(raws, batch_size=1)
        Applier(b).apply(raws, batch_size=1000)
        assert data_state(a) == data_state(b)
        assert a.collections(), "the JSON oplog creates collections"


@pytest.mark.parametrize("name", list(txn_cases()))
def test_transaction_cases_give_their_post_images(tmp_path: Path, name: str) -> None:
    case = txn_cases()[name]
    raws = [ejson_entry(op) for op in case["ops"]]
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply(raws, batch_size=1)
        if "postimage" not in case:  # the multiOpType case names admin.$cmd
            got = docs(head, "test", "foo")
            assert [d["_id"] for d in got] == [4, 5]
            return
        db, coll = case["ns"].split(".", 1)
        want = [bson.encode(json_util.loads(json_util.dumps(d))) for d in case["postimage"]]
        c = head.collection(db, coll)
        got_raw = [] if c is None else list(head.export(c))
        assert got_raw == want
        assert head.conn.execute("SELECT COUNT(*) FROM txn_entries").fetchone()[0] == 0
