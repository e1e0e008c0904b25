"""Fixtures of the restore tests: a real backup history (``tests.restore.world``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backupflows.oplog.segments import entry_ts
from tests.oplog.oplog_gen import generate
from tests.restore.world import World, cut_without_txn, make_world


@pytest.fixture(scope="session")
def oplog() -> list[bytes]:
    return generate(seed=11, n=4000)


def build_history(tmp: Path, oplog: list[bytes], url: str | None = None) -> World:
    """Snapshots at ~1000 and ~2500 entries (where no transaction is half
    applied), the whole oplog stored, states recorded every 250 entries."""
    w = make_world(tmp, url=url)
    w.position = entry_ts(oplog[0]) - 1
    w.apply(oplog[:900])
    i = cut_without_txn(w, oplog, 900, 1000)
    w.snapshot()
    w.apply(oplog[i:2400], record_every=250)
    j = cut_without_txn(w, oplog, 2400, 2500)
    w.snapshot()
    w.apply(oplog[j:], record_every=250)
    return w


@pytest.fixture
def history(tmp_path: Path, oplog: list[bytes], data_dir: Path) -> Iterator[World]:
    w = build_history(tmp_path / "history", oplog)
    yield w
    w.head.close()
