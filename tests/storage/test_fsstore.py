# ruff: noqa: F811 - pytest fixtures imported from snapshot_helpers
"""The filesystem store: a complete mongodump directory per snapshot, read
back by DumpReader with the right metadata; unchanged collections hard-linked."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupflows.head.store import HeadStore
from backupflows.mongodump import DumpReader
from backupflows.storage import fsstore, integrity, operations, service
from tests.oplog.helpers import Op, uuid
from tests.oplog.oplog_gen import generate
from tests.storage.snapshot_helpers import catalog, fill, job, state_of, storage  # noqa: F401


@pytest.mark.parametrize("gzip", [False, True])
def test_snapshot_is_a_mongodump_directory(storage: service.Storage, job: int, tmp_path: Path,
                                           gzip: bool) -> None:
    head = HeadStore(tmp_path / "h.db")
    fill(head, generate(seed=17, n=2500))
    op = Op(1_800_000_000)
    fill(head, [op.c("still", {"create": "same"}, ui=uuid(99)),
                op.i("still.same", {"_id": 1, "v": "unchanged"}, ui=uuid(99))])
    root = tmp_path / "fs"
    first = operations.take_fs(storage, job, head, "rs0", gzip=gzip, root=root)
    dump = DumpReader(root / "rs0" / str(first))
    expected = state_of(head)
    assert {ns.namespace: list(ns.documents()) for ns in dump if ns.meta.has_data} == expected
    for ns in dump:
        c = head.collection(ns.db, ns.name)
        assert ns.meta.type == c.type
        if c.holds_documents:
            assert ns.meta.uuid == c.uuid
            assert [i["name"] for i in ns.meta.indexes] == [
                __import__("bson").decode(s)["name"] for s in head.indexes(c)]
    fill(head, generate(seed=18, n=300)[-200:])
    second = operations.take_fs(storage, job, head, "rs0", gzip=gzip, root=root)
    a = root / "rs0" / str(first) / "still" / ("same.bson" + (".gz" if gzip else ""))
    b = root / "rs0" / str(second) / a.relative_to(root / "rs0" / str(first))
    assert a.stat().st_ino == b.stat().st_ino  # unchanged collection: hard link
    reader = DumpReader(root / "rs0" / str(second))
    assert {ns.namespace: list(ns.documents()) for ns in reader if ns.meta.has_data} \
        == state_of(head)
    assert fsstore.verify_snapshot(root, "rs0", second) == []
    result = integrity.check_storage(storage, alert=False, fs_root=root)
    assert result.ok and result.snapshots_checked == 2
    # removing the first snapshot leaves the second intact (links)
    fsstore.remove_snapshot(root, "rs0", first)
    assert fsstore.verify_snapshot(root, "rs0", second) == []
    head.close()
