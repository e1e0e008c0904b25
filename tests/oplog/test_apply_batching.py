"""Batched $v:2 updates: documents read once per batch, then changed in oplog
order in memory. Each case is applied in one batch and one entry per batch;
both must give the same head, with a content hash equal to a recount."""

from __future__ import annotations

import struct
from pathlib import Path

import bson
import pytest
from bson.raw_bson import RawBSONDocument

from backupflows.contenthash import ContentHash
from backupflows.errors import OplogError
from backupflows.head.store import HeadStore
from backupflows.oplog import crud
from backupflows.oplog.applier import Applier
from backupflows.oplog.delta import apply_delta_raw
from tests.oplog.helpers import Op, data_state, docs, uuid

U1 = uuid(1)
ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}


def delta(**sections: object) -> dict:
    return {"$v": 2, "diff": sections}


def both_ways(tmp_path: Path, entries: list[bytes]) -> HeadStore:
    """Apply ``entries`` in one batch and one by one; return the batched head
    after checking the two agree and the kept hash equals a recount."""
    heads = []
    for name, size in (("one_batch", 1000), ("per_entry", 1)):
        head = HeadStore(tmp_path / f"{name}.db")
        Applier(head).apply(entries, batch_size=size)
        for c in head.collections():
            assert (c.count, c.hash) == (lambda h: (h.count, h.hexdigest()))(
                ContentHash.of(head.export(c))), c.ns
        assert head.integrity_check() == []
        heads.append(head)
    assert data_state(heads[0]) == data_state(heads[1])
    assert heads[0].optime() == heads[1].optime()
    heads[1].close()
    return heads[0]


def start(op: Op) -> list[bytes]:
    return [op.c("d", {"create": "c", "idIndex": ID_INDEX}, ui=U1)]


def test_same_id_updated_twice_in_one_batch(tmp_path: Path) -> None:
    op = Op()
    entries = start(op) + [
        op.i("d.c", {"_id": 1, "n": 0, "tags": ["a"]}, ui=U1),
        op.u("d.c", 1, delta(u={"n": 1}), ui=U1),
        op.u("d.c", 1, delta(u={"n": 2}, stags={"a": True, "u1": "b"}), ui=U1),
        op.u("d.c", 1, delta(i={"x": True}), ui=U1),
    ]
    head = both_ways(tmp_path, entries)
    assert docs(head, "d", "c") == [{"_id": 1, "n": 2, "tags": ["a", "b"], "x": True}]


def test_same_id_updated_across_batches_of_an_existing_document(tmp_path: Path) -> None:
    op = Op()
    head = HeadStore(tmp_path / "h.db")
    Applier(head).apply(start(op) + [op.i("d.c", {"_id": 1, "n": 0}, ui=U1)])
    for n in range(1, 6):  # each one its own batch: the read comes from SQLite
        Applier(head).apply([op.u("d.c", 1, delta(u={"n": n}), ui=U1)])
    assert docs(head, "d", "c") == [{"_id": 1, "n": 5}]
    c = head.require("d", "c")
    assert (c.count, c.hash) == (1, ContentHash.of(head.export(c)).hexdigest())


def test_update_after_delete_in_one_batch_is_recorded_missing(tmp_path: Path) -> None:
    op = Op()
    entries = start(op) + [
        op.i("d.c", {"_id": 1, "n": 0}, ui=U1),
        op.i("d.c", {"_id": 2, "n": 0}, ui=U1),
        op.d("d.c", 1, ui=U1),
        op.u("d.c", 1, delta(u={"n": 1}), ui=U1),
        op.u("d.c", 2, delta(u={"n": 1}), ui=U1),
    ]
    head = both_ways(tmp_path, entries)
    c = head.require("d", "c")
    assert docs(head, "d", "c") == [{"_id": 2, "n": 1}]
    assert [bson.decode(r) for r in head.missing(c)] == [{"_id": 1}]


def test_delete_insert_update_of_one_id_in_one_batch(tmp_path: Path) -> None:
    op = Op()
    head = HeadStore(tmp_path / "h.db")
    Applier(head).apply(start(op) + [op.i("d.c", {"_id": 1, "v": "first"}, ui=U1)])
    Applier(head).apply([
        op.u("d.c", 1, delta(u={"v": "changed"}), ui=U1),
        op.d("d.c", 1, ui=U1),
        op.i("d.c", {"_id": 1, "v": "second"}, ui=U1),
        op.u("d.c", 1, delta(i={"w": 1}), ui=U1),
    ])
    assert docs(head, "d", "c") == [{"_id": 1, "v": "second", "w": 1}]
    c = head.require("d", "c")
    assert list(head.missing(c)) == []
    assert (c.count, c.hash) == (1, ContentHash.of(head.export(c)).hexdigest())


def test_update_of_a_missing_document_then_its_insert_in_one_batch(tmp_path: Path) -> None:
    op = Op()
    entries = start(op) + [
        op.u("d.c", "x", delta(u={"n": 1}), ui=U1),
        op.u("d.c", "y", delta(u={"n": 1}), ui=U1),
        op.i("d.c", {"_id": "y", "n": 5}, ui=U1),
    ]
    head = both_ways(tmp_path, entries)
    c = head.require("d", "c")
    assert docs(head, "d", "c") == [{"_id": "y", "n": 5}]
    assert [bson.decode(r) for r in head.missing(c)] == [{"_id": "x"}]


def test_bad_update_mid_batch_commits_the_entries_before_it_with_their_optime(
        tmp_path: Path) -> None:
    op = Op()
    good = start(op) + [
        op.i("d.c", {"_id": 1, "n": 0}, ui=U1),
        op.u("d.c", 1, delta(u={"n": 1}), ui=U1),
        op.u("d.c", 1, delta(u={"n": 2}), ui=U1),
    ]
    bad = op.u("d.c", 1, delta(u="not a document"), ui=U1)
    after = op.u("d.c", 1, delta(u={"n": 3}), ui=U1)
    head = HeadStore(tmp_path / "h.db")
    with pytest.raises(OplogError, match="op='u'"):
        Applier(head).apply(good + [bad, after], batch_size=1000)
    expected = HeadStore(tmp_path / "expected.db")
    Applier(expected).apply(good)
    assert data_state(head) == data_state(expected)
    assert head.optime() == expected.optime()
    assert docs(head, "d", "c") == [{"_id": 1, "n": 2}]


def _not_round_tripping(n: int) -> bytes:
    """A document the C codec does not re-encode to its own bytes (_id not
    first, which the encoder would move): only the raw walk may update it."""
    body = b"".join(b"\x10" + name + b"\x00" + struct.pack("<i", v)
                    for name, v in ((b"n", n), (b"_id", 1), (b"m", 0)))
    raw = struct.pack("<i", len(body) + 5) + body + b"\x00"
    assert bson.encode(bson.decode(raw)) != raw
    return raw


def test_documents_the_codec_cannot_vouch_for_go_through_the_raw_walk(tmp_path: Path) -> None:
    op = Op()
    raw_doc = _not_round_tripping(0)
    head = HeadStore(tmp_path / "h.db")
    Applier(head).apply(start(op) + [op.i("d.c", RawBSONDocument(raw_doc), ui=U1)])
    expected = raw_doc
    for n in range(1, 4):
        diff = bson.encode({"u": {"n": n}})
        expected = apply_delta_raw(expected, diff)
        Applier(head).apply([op.u("d.c", 1, delta(u={"n": n}), ui=U1)])
    c = head.require("d", "c")
    assert list(head.export(c)) == [expected]
    assert list(bson.decode(expected)) == ["n", "_id", "m"]  # field order kept


def test_content_known_canonical_is_keyed_by_bytes_not_by_id(tmp_path: Path) -> None:
    """A document written by the codec path, later replaced (by an insert of
    the same _id) with bytes the codec does not round-trip, is checked again."""
    op = Op()
    head = HeadStore(tmp_path / "h.db")
    Applier(head).apply(start(op) + [op.i("d.c", {"_id": 1, "n": 0, "s": "x"}, ui=U1),
                                     op.u("d.c", 1, delta(u={"n": 1}), ui=U1)])
    replaced = _not_round_tripping(7)
    Applier(head).apply([op.i("d.c", RawBSONDocument(replaced), ui=U1)])
    Applier(head).apply([op.u("d.c", 1, delta(u={"n": 8}), ui=U1)])
    c = head.require("d", "c")
    assert list(head.export(c)) == [apply_delta_raw(replaced, bson.encode({"u": {"n": 8}}))]


def test_canonical_memory_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(crud._Canonical, "MAX", 4)
    monkeypatch.setattr(crud, "canonical", crud._Canonical())
    op = Op()
    head = HeadStore(tmp_path / "h.db")
    entries = start(op) + [op.i("d.c", {"_id": i, "n": 0}, ui=U1) for i in range(10)]
    entries += [op.u("d.c", i, delta(u={"n": r}), ui=U1) for r in (1, 2) for i in range(10)]
    Applier(head).apply(entries, batch_size=3)
    assert len(crud.canonical.digests) + len(crud.canonical.older) <= 8
    assert docs(head, "d", "c") == [{"_id": i, "n": 2} for i in range(10)]


def test_inserts_follow_the_catalog_through_ddl_in_one_batch(tmp_path: Path) -> None:
    """Inserts skip resolving their collection again within a batch; every
    command (and write to system.views) makes them resolve it afresh: an
    insert after a drop recreates the collection, after a rename the old
    name is a new collection and the new name holds the renamed one."""
    op = Op()
    u2, u3 = uuid(2), uuid(3)
    entries = start(op) + [
        op.i("d.c", {"_id": 1}, ui=U1),
        op.i("d.c", {"_id": 2}, ui=U1),
        op.c("d", {"drop": "c"}, ui=U1),
        op.i("d.c", {"_id": 3}, ui=U1),  # a replay over a later state: recreated
        op.c("d", {"create": "e", "idIndex": ID_INDEX}, ui=u2),
        op.i("d.e", {"_id": "e1"}, ui=u2),
        op.c("d", {"renameCollection": "d.e", "to": "d.f", "stayTemp": False,
                   "dropTarget": False}, ui=u2),
        op.i("d.e", {"_id": "e2"}, ui=u3),
        op.i("d.f", {"_id": "f1"}, ui=u2),
        op.i("d.e", {"_id": "e3"}, ui=u3),
        op.i("d.system.views", {"_id": "d.v", "viewOn": "c", "pipeline": []}),
        op.i("d.c", {"_id": 4}, ui=U1),
        op.n(),
        op.i("d.c", {"_id": 5}, ui=U1),
    ]
    head = both_ways(tmp_path, entries)
    assert docs(head, "d", "c") == [{"_id": 3}, {"_id": 4}, {"_id": 5}]
    assert docs(head, "d", "e") == [{"_id": "e2"}, {"_id": "e3"}]
    assert docs(head, "d", "f") == [{"_id": "e1"}, {"_id": "f1"}]
    assert head.require("d", "f").uuid == bytes(u2)
    assert head.require("d", "e").uuid == bytes(u3)
    assert head.require("d", "v").type == "view"


def test_migration_inserts_are_skipped_after_plain_ones(tmp_path: Path) -> None:
    op = Op()
    entries = start(op) + [
        op.i("d.c", {"_id": 1}, ui=U1),
        op.i("d.c", {"_id": 2}, ui=U1, fromMigrate=True),
        op.i("d.c", {"_id": 3}, ui=U1),
    ]
    head = HeadStore(tmp_path / "h.db")
    Applier(head, skip_from_migrate=True).apply(entries)
    assert docs(head, "d", "c") == [{"_id": 1}, {"_id": 3}]
    head.close()
