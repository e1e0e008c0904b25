"""Restores stream: the memory a restore takes does not grow with the data
(tracemalloc peak of a 4x larger snapshot, to a directory and an archive)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import bson
import pytest

from backupflows.restore import service
from tests.restore.world import make_world

pytestmark = pytest.mark.timeout(120)


def _peak(tmp: Path, n: int, kind: str) -> int:
    w = make_world(tmp / f"w{n}")
    w.head.ensure_collection("big", "docs")
    batch = [bson.encode({"_id": i, "pad": "p" * 400, "n": i}) for i in range(n)]
    w.head.load_slice("big", "docs", batch)
    del batch
    sid = w.snapshot()
    w.states.clear()
    dest = {"kind": kind, "path": str(tmp / f"out{n}")}
    req = service.request(w.storage, deployment=w.name, snapshot_id=sid, destination=dest)
    tracemalloc.start()
    try:
        out = service.run(w.storage, req.id, "t")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        w.head.close()
    assert out["state"] == "done" and out["result"]["docs"] == n
    return peak


@pytest.mark.parametrize("kind", ["dir", "archive"])
def test_memory_does_not_grow_with_the_snapshot(tmp_path: Path, data_dir: Path,
                                                kind: str) -> None:
    small = _peak(tmp_path, 5_000, kind)
    large = _peak(tmp_path, 20_000, kind)  # ~9 MB of documents
    assert large < small * 1.5 + 2_000_000, (small, large)
