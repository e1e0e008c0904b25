"""Integrity check of snapshot storage (``backupflows check --storage``).

For every restorable snapshot (of one job, or all): its manifest must read
back; every block it lists must exist, decompress and hash to its id (each
block is read once per check however many snapshots share it); the block
index must hold a live row for each; and, deep, every collection's documents
merged from its layers must give the manifest's count and content hash (the
head's). Filesystem-store snapshots are re-read from their files. Each
failing snapshot raises an ``alert`` event naming the snapshot and what is
wrong (missing or corrupt block ids); a snapshot that passes after its last
alert (a block put back from a copy) gets an ``integrity_ok`` event, which
clears its ``integrity_failure`` alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from backupflows.catalog.models import BackupJob, Deployment, Event
from backupflows.catalog.snapshot_models import Block, Snapshot
from backupflows.errors import StorageError
from backupflows.jobs.lifecycle import add_event
from backupflows.storage import fsstore
from backupflows.storage import snapshot as snap
from backupflows.storage.service import Storage, load_manifest

ALERT = "alert"
PASSED = "integrity_ok"


@dataclass
class StorageCheck:
    snapshots_checked: int = 0
    blocks_checked: int = 0
    failed: dict[int, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def problems(self) -> list[str]:
        return [p for ps in self.failed.values() for p in ps]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "snapshots_checked": self.snapshots_checked,
                "blocks_checked": self.blocks_checked,
                "failed": {str(k): v for k, v in sorted(self.failed.items())}}


def check_storage(storage: Storage, *, job_id: int | None = None, deep: bool = True,
                  alert: bool = True, fs_root: Any = None) -> StorageCheck:
    """Check every done snapshot (of ``job_id``); alert events for failures."""
    with storage.reading() as s:
        q = select(Snapshot, Deployment.name).join(
            BackupJob, BackupJob.id == Snapshot.job_id).join(Deployment).where(
            Snapshot.state == "done").order_by(Snapshot.id)
        if job_id is not None:
            q = q.where(Snapshot.job_id == job_id)
        rows = s.execute(q).all()
        live = set(s.execute(select(Block.id).where(Block.state == "live")).scalars())
    result = StorageCheck()
    cache: dict[str, str | None] = {}
    for row, deployment in rows:
        result.snapshots_checked += 1
        if row.store == "filesystem":
            problems = _check_fs(row, deployment, fs_root)
        else:
            problems = _check_blockstore(storage, row, live, cache, deep, result)
        if problems:
            result.failed[row.id] = problems
    if alert and result.failed:
        _raise_alerts(storage, rows, result)
    if alert:
        _clear_alerts(storage, rows, result)
    return result


def _check_blockstore(storage: Storage, row: Snapshot, live: set[str],
                      cache: dict[str, str | None], deep: bool, result: StorageCheck) -> list[str]:
    try:
        m = load_manifest(storage, row)
    except StorageError as exc:
        return [str(exc)]
    before = len(cache)
    v = snap.verify(storage.blocks, m, deep=deep, checked=cache)
    result.blocks_checked += len(cache) - before
    unindexed = [b for b in m.block_ids() if b not in live]
    extra = [f"snapshot {row.id}: block {b} is not live in the block index" for b in unindexed]
    return v.problems + extra


def _check_fs(row: Snapshot, deployment: str, fs_root: Any) -> list[str]:
    from backupflows.storage.operations import fs_root as default_root

    return fsstore.verify_snapshot(fs_root or default_root(), deployment, row.id)


def _raise_alerts(storage: Storage, rows: list[Any], result: StorageCheck) -> None:
    jobs = {row.id: row.job_id for row, _ in rows}
    with storage.sessions() as s:
        for sid, problems in result.failed.items():
            add_event(s, jobs[sid], ALERT,
                      f"snapshot {sid} failed its integrity check: {problems[0]}"
                      + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
                      snapshot=sid, problems=problems[:50])


def _clear_alerts(storage: Storage, rows: list[Any], result: StorageCheck) -> None:
    """An ``integrity_ok`` event for each checked snapshot that passed while
    its newest integrity event is an alert."""
    passed = {row.id: row.job_id for row, _ in rows if row.id not in result.failed}
    if not passed:
        return
    with storage.sessions() as s:
        latest: dict[int, str] = {}
        for kind, data in s.execute(select(Event.kind, Event.data).where(
                Event.kind.in_((ALERT, PASSED)),
                Event.job_id.in_(set(passed.values()))).order_by(Event.id)):
            sid = (data or {}).get("snapshot")
            if sid in passed:
                latest[sid] = kind
        for sid, kind in latest.items():
            if kind != ALERT:
                continue
            add_event(s, passed[sid], PASSED,
                      f"snapshot {sid} passes its integrity check again", snapshot=sid)


def run_storage_check(name: str | None = None, *, catalog_url: str | None = None,
                      store_url: str | None = None, deep: bool = True) -> StorageCheck:
    """Entry point of ``backupflows check --storage [NAME]``."""
    storage = Storage.open(catalog_url, store_url)
    job_id = None
    if name is not None:
        from backupflows.storage.service import job_for

        with storage.reading() as s:
            job_id = job_for(s, name).id
    return check_storage(storage, job_id=job_id, deep=deep)
