"""The sparse roll-forward's scan: which documents and namespaces the
entries to apply touch."""

from __future__ import annotations

from bson.objectid import ObjectId

from backupflows.bsonorder import id_key
from backupflows.restore import sparse
from tests.oplog.helpers import Op, uuid


def _key(v: object) -> bytes:
    import bson

    return id_key(bson.encode({"_id": v}))


def test_scan_finds_documents_and_wholesale_namespaces() -> None:
    op = Op()
    oid = ObjectId()
    entries = [
        op.i("a.x", {"_id": 1, "v": 1}, ui=uuid(1)),
        op.u("a.x", 2, {"$v": 2, "diff": {"u": {"v": 3}}}, ui=uuid(1)),
        op.d("a.y", "k", ui=uuid(2)),
        op.i("a.y", {"_id": oid}, ui=uuid(2)),
        op.entry("c", "a.$cmd", {"applyOps": [
            {"op": "i", "ns": "b.z", "ui": uuid(3), "o": {"_id": 7}},
            {"op": "c", "ns": "b.$cmd", "o": {"drop": "gone"}}]}),
        op.entry("c", "a.$cmd", {"createIndexes": "x", "v": 2, "key": {"v": 1}, "name": "v_1"}),
        op.entry("c", "a.$cmd", {"collMod": "y", "validator": {}}),
        op.entry("c", "a.$cmd", {"renameCollection": "a.r1", "to": "a.r2"}),
        op.entry("c", "c.$cmd", {"dropDatabase": 1}),
        op.entry("c", "a.$cmd", {"create": "fresh"}),
        op.n(),
    ]
    t = sparse.scan(entries)
    assert t.keys == {"a.x": {_key(1), _key(2)}, "a.y": {_key("k"), _key(oid)},
                      "b.z": {_key(7)}}
    assert t.whole == {"b.gone", "a.r1", "a.r2", "a.fresh"} and t.whole_dbs == {"c"}
    assert t.is_whole("c.anything") and not t.is_whole("a.x") and not t.is_whole("a.y")


def test_doc_key_fast_path_equals_id_key() -> None:
    import bson

    for v in (ObjectId(), 5, "s", 2.5, {"a": 1}):
        doc = bson.encode({"_id": v, "x": 1})
        assert sparse.doc_key(doc) == id_key(doc)
