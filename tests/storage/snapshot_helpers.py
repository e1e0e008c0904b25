"""Shared set-up of the snapshot tests: a migrated SQLite catalog, a job, a
filesystem object store with tiny blocks, heads filled by the real Applier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupflows.catalog import migrate
from backupflows.catalog.db import dispose_engines, session_scope
from backupflows.catalog.models import BackupJob, Deployment
from backupflows.contenthash import ContentHash
from backupflows.head.store import HeadStore
from backupflows.oplog.applier import Applier
from backupflows.storage import integrity, service
from backupflows.storage import snapshot as snap
from backupflows.storage.backends import open_backend
from backupflows.storage.chunker import ChunkParams

SMALL = ChunkParams(avg=4096)  # the test environment shrinks blocks (borg habit)


def small_opts(**kw: Any) -> snap.TakeOptions:
    return snap.TakeOptions(params=SMALL, **kw)


def make_catalog(path: Path) -> str:
    url = f"sqlite:///{path}"
    migrate.upgrade(url)
    return url


def add_job(url: str, name: str = "rs0", state: str = "routine") -> int:
    with session_scope(url) as s:
        dep = Deployment(name=name, uri="mongodb://h/")
        s.add(dep)
        s.flush()
        job = BackupJob(deployment_id=dep.id, state=state)
        s.add(job)
        s.flush()
        return job.id


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[str]:
    url = make_catalog(tmp_path / "catalog.db")
    yield url
    dispose_engines(close=True)


@pytest.fixture
def storage(catalog: str, tmp_path: Path) -> service.Storage:
    return service.Storage(catalog, open_backend(tmp_path / "store"))


@pytest.fixture
def job(catalog: str) -> int:
    return add_job(catalog)


def fill(head: HeadStore, entries: list[bytes], batch: int = 200) -> None:
    Applier(head).apply(entries, batch_size=batch)


def state_of(head: HeadStore) -> dict[str, list[bytes]]:
    """Every collection's raw documents in _id order (what a restore must give)."""
    return {c.ns: list(head.export(c)) for c in head.collections() if c.holds_documents}


def restored(storage: service.Storage, sid: int) -> dict[str, list[bytes]]:
    m = service.open_snapshot(storage, sid)
    return {c.ns: list(snap.read_entry(storage.blocks, c)) for c in m.collections
            if c.holds_documents}


def hashes(state: dict[str, list[bytes]]) -> dict[str, tuple[int, str]]:
    out = {}
    for ns, docs in state.items():
        h = ContentHash.of(docs)
        out[ns] = (h.count, h.hexdigest())
    return out


def assert_store_intact(storage: service.Storage) -> None:
    """Tests that change a store end with a full integrity check."""
    result = integrity.check_storage(storage, alert=False)
    assert result.ok, result.problems
