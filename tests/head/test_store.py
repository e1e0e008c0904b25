"""The head store: content hashes, incremental change tracking, slices,
snapshots and errors."""

from __future__ import annotations

from pathlib import Path

import bson
import pytest

from backupflows.bsonorder import id_key
from backupflows.contenthash import ContentHash
from backupflows.errors import HeadError
from backupflows.head.store import HeadStore
from backupflows.oplog.applier import Applier
from tests.oplog.helpers import Op, docs, head_state, uuid
from tests.oplog.oplog_gen import generate


@pytest.fixture(scope="module")
def oplog() -> list[bytes]:
    return generate(seed=21, n=4000)


def test_kept_hash_equals_recomputed(oplog: list[bytes], tmp_path: Path) -> None:
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply(oplog, batch_size=250)
        colls = [c for c in head.collections() if c.holds_documents]
        assert colls
        for c in colls:
            kept = head.content_hash(c)
            assert (kept.count, kept.total) == (c.count, int(c.hash, 16))
            scratch = ContentHash.of(head.export(c))
            assert (kept.count, kept.hexdigest()) == (scratch.count, scratch.hexdigest())
            assert kept.count == len(list(head.export(c)))


def test_changes_since_a_mark_rebuild_the_current_state(oplog: list[bytes],
                                                        tmp_path: Path) -> None:
    """A snapshot at mark m plus changes_since(m) equals the head now, for
    every collection whose generation is not newer than m."""
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply(oplog[:1500], batch_size=100)
        for stop in (2200, 3000, len(oplog)):
            mark = head.mark()
            before = {c.ns: dict(head.export_keyed(c)) for c in head.collections()}
            start = 1500 if stop == 2200 else (2200 if stop == 3000 else 3000)
            Applier(head).apply(oplog[start:stop], batch_size=100)
            assert head.mark() > mark
            checked = 0
            for c in head.collections():
                if not c.holds_documents:
                    continue
                if c.generation > mark or c.ns not in before:
                    continue  # (re)created or renamed since: stored whole
                state = dict(before[c.ns])
                changes = list(head.changes_since(mark, c))
                assert [k for k, _ in changes] == sorted(k for k, _ in changes)
                for k, doc in changes:
                    if doc is None:
                        state.pop(k, None)
                    else:
                        state[k] = doc
                assert sorted(state.items()) == list(head.export_keyed(c)), c.ns
                checked += 1
            assert checked


def test_generation_changes_on_rename_and_recreate(tmp_path: Path) -> None:
    op = Op()
    idx = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply([op.c("d", {"create": "a", "idIndex": idx}, ui=uuid(1)),
                             op.i("d.a", {"_id": 1}, ui=uuid(1))])
        g0, mark = head.require("d", "a").generation, head.mark()
        Applier(head).apply([op.i("d.a", {"_id": 2}, ui=uuid(1))])
        assert head.require("d", "a").generation == g0  # plain writes keep it
        Applier(head).apply([op.c("d", {"renameCollection": "d.a", "to": "d.b"}, ui=uuid(1))])
        assert head.require("d", "b").generation > mark
        mark = head.mark()
        Applier(head).apply([op.c("d", {"drop": "b"}, ui=uuid(1)),
                             op.c("d", {"create": "b", "idIndex": idx}, ui=uuid(2))])
        assert head.require("d", "b").generation > mark


def test_tombstones_are_pruned_up_to_a_mark(tmp_path: Path) -> None:
    op = Op()
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply([op.i("d.c", {"_id": i}) for i in range(5)])
        m0 = head.mark()
        Applier(head).apply([op.d("d.c", 1), op.d("d.c", 2)])
        m1 = head.mark()
        Applier(head).apply([op.d("d.c", 3)])
        c = head.require("d", "c")
        assert [d for _, d in head.changes_since(m0, c)] == [None, None, None]
        assert head.prune_tombstones(m1) == 2
        assert len(list(head.changes_since(m0, c))) == 1  # only the newer delete


def test_reinserted_document_is_reported_once(tmp_path: Path) -> None:
    op = Op()
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply([op.i("d.c", {"_id": 1})])
        mark = head.mark()
        Applier(head).apply([op.d("d.c", 1)])
        Applier(head).apply([op.i("d.c", {"_id": 1, "again": True})])
        changes = list(head.changes_since(mark, head.require("d", "c")))
        assert [bson.decode(d) for _, d in changes] == [{"_id": 1, "again": True}]


def test_loading_a_slice_twice_gives_the_same_head(tmp_path: Path) -> None:
    slice_ = [bson.encode({"_id": i, "x": "y" * i}) for i in range(3000)]
    with HeadStore(tmp_path / "a.db") as a, HeadStore(tmp_path / "b.db") as b:
        for head in (a, b):
            head.ensure_collection("d", "c", uuid=bytes(uuid(5)))
        assert a.load_slice("d", "c", slice_) == 3000
        b.load_slice("d", "c", slice_)
        b.load_slice("d", "c", reversed(slice_))
        sa, sb = head_state(a), head_state(b)
        assert sa == sb
        assert a.integrity_check() == [] and b.integrity_check() == []


def test_slice_into_unknown_collection_is_an_error(tmp_path: Path) -> None:
    with HeadStore(tmp_path / "h.db") as head, pytest.raises(HeadError, match="no collection"):
        head.load_slice("d", "nope", [bson.encode({"_id": 1})])


def test_bad_document_in_a_slice_is_an_error(tmp_path: Path) -> None:
    with HeadStore(tmp_path / "h.db") as head:
        head.ensure_collection("d", "c")
        with pytest.raises(HeadError, match="d.c"):
            head.load_slice("d", "c", [bson.encode({"_id": 1}), bson.encode({"x": 1})])
        assert docs(head, "d", "c") == []  # the slice is one transaction


def test_snapshot_sees_one_committed_state(tmp_path: Path) -> None:
    op = Op()
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply([op.i("d.c", {"_id": i}) for i in range(1000)])
        with head.snapshot() as snap:
            c = snap.require("d", "c")
            stream = snap.export(c)
            first = [next(stream) for _ in range(10)]
            Applier(head).apply([op.d("d.c", i) for i in range(500)]
                                + [op.i("d.c", {"_id": 5000})])
            rest = list(stream)
            assert len(first) + len(rest) == 1000
            assert snap.content_hash(c).count == 1000
            assert snap.optime().increment == 1000
        assert head.require("d", "c").count == 501


def test_not_a_head_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(HeadError, match="cannot open head"):
        HeadStore(bad)


def test_snapshot_opens_while_a_write_transaction_is_open(tmp_path: Path) -> None:
    op = Op()
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply([op.i("d.c", {"_id": 1})])
        with head.transaction() as w:
            doc = bson.encode({"_id": 2})
            w.put_new(w.catalog.get("d", "c"), id_key(doc), doc)
            w.flush()
            with head.snapshot() as snap:  # does not wait for the writer
                assert snap.require("d", "c").count == 1


def test_changes_since_reads_the_same_through_the_index_or_a_scan(
        oplog: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Few changes are found through the (cid, seq) index and read by key;
    many through one scan of the collection: both give the same stream."""
    from backupflows.head import export

    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply(oplog[:2000], batch_size=100)
        mark = head.mark()
        Applier(head).apply(oplog[2000:], batch_size=100)
        colls = [c for c in head.collections() if c.holds_documents and c.generation <= mark]
        by_index = {c.ns: list(head.changes_since(mark, c)) for c in colls}
        assert sum(len(v) for v in by_index.values()) > 50
        assert any(d is None for v in by_index.values() for _, d in v)  # tombstones too
        monkeypatch.setattr(export, "CHANGED_KEYS_IN_MEMORY", 3)
        by_scan = {c.ns: list(head.changes_since(mark, c)) for c in colls}
        assert by_scan == by_index
