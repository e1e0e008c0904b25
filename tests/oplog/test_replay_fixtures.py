"""The dump fixtures (a mongodump directory + its oplog.bson) reach their
README end states through the applier, and every fixture does through
``backupflows oplog replay`` run as a subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import bson
import pytest
from bson.objectid import ObjectId

from backupflows.head import rawdoc
from backupflows.head.store import HeadStore
from backupflows.mongodump import CollectionMeta, DumpReader, DumpWriter
from backupflows.oplog.replay import apply_oplog, load_dump
from tests.oplog.helpers import TESTDATA, file_entries

DUMPS = ["oplogdump", "duplicate_index_key_with_oplog", "collMod_ttl_index",
         "timeseries_tests/ts_dump_with_oplog"]


def no_duplicate_names(raw: bytes) -> bool:
    names = []
    for name, t, _, vs, end in rawdoc.iter_elements(raw):
        names.append(name)
        if t in (0x03, 0x04) and not no_duplicate_names(raw[vs:end]):
            return False
    return len(names) == len(set(names))


def check_end_state(fixture: str, docs: dict[str, list[bytes]],
                    indexes: dict[str, list[dict]]) -> None:
    if fixture == "oplogdump":
        assert len(docs["db1.c1"]) == 10
    elif fixture == "duplicate_index_key_with_oplog":
        assert [bson.decode(d)["_id"] for d in docs["test.foo"]] == [
            ObjectId("60350ac1415a2fc63f3195ab")]
    elif fixture == "collMod_ttl_index":
        assert len(docs["mongodump_test_db.coll1"]) == 10
        a_1 = [s for s in indexes["mongodump_test_db.coll1"] if s["name"] == "a_1"]
        assert a_1[0]["expireAfterSeconds"] == 1000
    else:
        buckets = docs["timeseries_test.system.buckets.foo_ts"]
        assert len(buckets) == 10
        assert sum(len(bson.decode(b)["data"]["ts"]) for b in buckets) == 2164
        assert all(no_duplicate_names(b) for b in buckets)


@pytest.mark.parametrize("fixture", DUMPS)
def test_dump_fixture_through_the_applier(fixture: str, tmp_path: Path) -> None:
    with HeadStore(tmp_path / "h.db") as head:
        load_dump(head, DumpReader(TESTDATA / fixture))
        apply_oplog(head, file_entries(TESTDATA / fixture / "oplog.bson"), batch_size=50)
        docs = {c.ns: list(head.export(c)) for c in head.collections()}
        indexes = {c.ns: [bson.decode(s) for s in head.indexes(c)]
                   for c in head.collections()}
        check_end_state(fixture, docs, indexes)
        assert head.integrity_check() == []


def run_replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from backupflows.cli import main; main()",
                           "oplog", "replay", *args],
                          capture_output=True, text=True, timeout=120)


def read_out(out: Path) -> tuple[dict[str, list[bytes]], dict[str, list[dict]],
                                 dict[str, CollectionMeta]]:
    docs, indexes, metas = {}, {}, {}
    for ns in DumpReader(out):
        docs[f"{ns.db}.{ns.data_name}"] = list(ns.documents())
        if ns.meta is not None:
            indexes[ns.namespace] = ns.meta.indexes
            metas[ns.namespace] = ns.meta
    return docs, indexes, metas


@pytest.mark.parametrize("fixture", DUMPS)
def test_dump_fixture_through_the_command(fixture: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run_replay("--dump", str(TESTDATA / fixture),
                      "--oplog", str(TESTDATA / fixture / "oplog.bson"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "applied" in proc.stderr
    docs, indexes, metas = read_out(out)
    check_end_state(fixture, docs, indexes)
    for ns, raws in docs.items():  # documents in _id order
        ids = [bson.decode(d)["_id"] for d in raws]
        assert ids == sorted(ids), ns
    if fixture == "timeseries_tests/ts_dump_with_oplog":
        assert metas["timeseries_test.foo_ts"].type == "timeseries"
        assert metas["timeseries_test.foo_ts"].options["timeseries"]["timeField"] == "ts"
    if fixture == "collMod_ttl_index":  # the dump's UUID is kept
        assert metas["mongodump_test_db.coll1"].uuid == bytes.fromhex(
            "ffa7054f30dc422696fa9607e150cb53")


def _foo_dump(path: Path) -> Path:
    meta = CollectionMeta("test", "foo", indexes=[
        {"v": 2, "key": {"_id": 1}, "name": "_id_"},
        {"v": 2, "key": {"f": 1.0}, "name": "f_1", "expireAfterSeconds": 1000}])
    DumpWriter(path, fsync=False).write_collection(meta, [bson.encode({"_id": 1, "f": 2})])
    return path


@pytest.mark.parametrize("rel, check", [
    ("create_indexes/oplog.bson",
     lambda d, i: [s["name"] for s in i["create_indexes.test"]] == ["_id_", "a_1", "b_1"]),
    ("commit_indexes_build/oplog.bson",
     lambda d, i: len(d["commit_index.test"]) == 1 and len(i["commit_index.test"]) == 3),
    ("oplog_ignore_index/oplog.bson", lambda d, i: d == {}),
    ("dump_with_noop_in_oplog/oplog.bson", lambda d, i: len(d["test.data"]) == 1),
    ("tools-2002/oplog.bson", lambda d, i: i["foo.bar"][-1]["name"] == "a_1_b_1"),
    ("oplog_partial_skips/oplog.bson", lambda d, i: list(d) == ["db3.c1"]
     and len(d["db3.c1"]) == 5),
    ("oplogs/bson/vectored_insert.bson",
     lambda d, i: len(d["mongodump_test_db.coll1"]) == 2),
    ("oplogs/bson/linked_vectored_inserts.bson",
     lambda d, i: len(d["mongodump_test_db.coll1"]) == 5),
    ("oplogs/bson/bypassDocumentValidation.bson",
     lambda d, i: len(d["mongodump_test_db.coll1"]) == 3),
    ("oplogs/bson/collMod_indexUniqueness.bson",
     lambda d, i: all(s.get("prepareUnique") for s in i["mongodump_test_db.coll1"][1:])),
    ("oplogs/bson/create_index.bson", lambda d, i: len(i["test.foo"]) == 2),
    ("oplogs/bson/drop_index.bson", lambda d, i: len(i["test.foo"]) == 1),
    ("oplogs/bson/collMod.bson", lambda d, i: i["test.foo"][1]["expireAfterSeconds"] == 3600),
    ("oplogs/bson/collMod_with_hidden.bson", lambda d, i: i["test.foo"][1]["hidden"] is True),
    ("oplogs/bson/commit_index.bson", lambda d, i: i["test.foo"][-1]["name"] == "a_1"),
    ("oplogs/bson/drop_collection.bson", lambda d, i: d == {}),
    ("oplogs/bson/drop_db.bson", lambda d, i: d == {}),
])
def test_oplog_fixture_through_the_command(rel: str, check, tmp_path: Path) -> None:
    dump = _foo_dump(tmp_path / "dump") if "/bson/" in rel and "_test_db" not in rel \
        and "vectored" not in rel and "bypass" not in rel and "Uniqueness" not in rel \
        else (tmp_path / "dump")
    dump.mkdir(exist_ok=True)
    out = tmp_path / "out"
    proc = run_replay("--dump", str(dump), "--oplog", str(TESTDATA / rel), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    docs, indexes, _ = read_out(out)
    assert check(docs, indexes), (docs, indexes)


def test_until_stops_before_the_limit(tmp_path: Path) -> None:
    # oplogdump: insert @28, applyOps of 3 inserts @29, insert @32
    out = tmp_path / "out"
    proc = run_replay("--dump", str(TESTDATA / "oplogdump"),
                      "--oplog", str(TESTDATA / "oplogdump" / "oplog.bson"),
                      "--until", "1511064038:32", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    docs, _, _ = read_out(out)
    assert len(docs["db1.c1"]) == 9


@pytest.mark.parametrize("case", ["no-dump", "no-oplog", "truncated", "bad-entry",
                                  "bad-until", "out-not-empty"])
def test_bad_input_is_one_line_and_nonzero(case: str, tmp_path: Path) -> None:
    dump, oplog, out = TESTDATA / "oplogdump", TESTDATA / "oplogdump" / "oplog.bson", \
        tmp_path / "out"
    extra: list[str] = []
    if case == "no-dump":
        dump = tmp_path / "missing"
    elif case == "no-oplog":
        oplog = tmp_path / "missing.bson"
    elif case == "truncated":
        oplog = tmp_path / "oplog.bson"
        oplog.write_bytes((TESTDATA / "oplogdump" / "oplog.bson").read_bytes()[:-7])
    elif case == "bad-entry":
        oplog = tmp_path / "oplog.bson"
        good = list(file_entries(TESTDATA / "oplogdump" / "oplog.bson"))
        bad = bson.encode({"op": "x", "ns": "db1.c1", "o": {}, "ts": bson.Timestamp(1, 1)})
        oplog.write_bytes(good[0] + bad + good[2])
    elif case == "bad-until":
        extra = ["--until", "soon"]
    else:
        out.mkdir()
        (out / "x").write_text("x")
    proc = run_replay("--dump", str(dump), "--oplog", str(oplog), "--out", str(out), *extra)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    # progress lines may come first; the error is one line, the last, no traceback
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], lines
    assert "Traceback" not in proc.stderr
    if case == "bad-entry":
        assert "op='x'" in lines[-1] and "ns='db1.c1'" in lines[-1]
        assert "Timestamp(1, 1)" in lines[-1]
    if case == "truncated":
        assert "oplog.bson" in lines[-1]


def test_replay_keeps_a_head_when_asked(tmp_path: Path) -> None:
    head_path = tmp_path / "kept.db"
    proc = run_replay("--dump", str(TESTDATA / "oplogdump"),
                      "--oplog", str(TESTDATA / "oplogdump" / "oplog.bson"),
                      "--out", str(tmp_path / "out"), "--head", str(head_path))
    assert proc.returncode == 0, proc.stderr
    with HeadStore(head_path) as head:
        assert head.optime().seconds == 1511064038
        assert head.require("db1", "c1").count == 10
    shutil.rmtree(tmp_path / "out")
