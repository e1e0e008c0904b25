"""Snapshots in the catalog: taking one (claim, lease, finish), reading its
manifest, listing, deleting, pinning for restores.

The catalog row is the visibility switch: a snapshot is ``pending`` (with a
lease renewed while it runs) until every block and its manifest are stored;
the finishing transaction touches every block the manifest lists and turns
the row ``done`` only if all are live (``blockindex`` explains why this
keeps grooms safe). A killed snapshot stays ``pending`` until its lease
lapses and is then ``failed``: nothing a restore or a listing picks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, Deployment, utcnow
from backupflows.catalog.snapshot_models import Snapshot, SnapshotDep, SnapshotPolicy
from backupflows.errors import Conflict, IntegrityError, NotFound, StorageError
from backupflows.head.store import HeadStore
from backupflows.storage import blockindex
from backupflows.storage import manifest as mf
from backupflows.storage import snapshot as snap
from backupflows.storage.backends import Backend, ObjectNotFound, open_backend
from backupflows.storage.blockstore import BlockStore

LEASE_SECONDS = 600.0
RENEW_SECONDS = 60.0


@dataclass
class Storage:
    """Where snapshots live: the catalog (by URL) and the object store."""

    catalog_url: str | None
    backend: Backend

    def sessions(self) -> AbstractContextManager[Session]:
        return session_scope(self.catalog_url)

    def reading(self) -> AbstractContextManager[Session]:
        return session_scope(self.catalog_url, readonly=True)

    @property
    def blocks(self) -> BlockStore:
        return BlockStore(self.backend, self.sessions)

    @classmethod
    def open(cls, catalog_url: str | None = None, store_url: str | os.PathLike[str] | None = None
             ) -> Storage:
        if store_url is None:
            from backupflows.settings import get_settings

            store_url = get_settings().store_url
        return cls(catalog_url, open_backend(store_url))


# -- lookups ----------------------------------------------------------------

def job_for(session: Session, name: str) -> BackupJob:
    """The current (newest) job of deployment ``name``."""
    job = session.execute(select(BackupJob).join(Deployment).where(Deployment.name == name)
                          .order_by(BackupJob.id.desc()).limit(1)).scalar_one_or_none()
    if job is None:
        known = session.execute(select(Deployment.id).where(Deployment.name == name)).first()
        raise NotFound(f"no backup job for deployment {name!r}" if known
                       else f"no deployment named {name!r}")
    return job


def policy_for(session: Session, job_id: int) -> SnapshotPolicy:
    """The job's snapshot policy (created with the defaults on first use)."""
    policy = session.get(SnapshotPolicy, job_id)
    if policy is None:
        policy = SnapshotPolicy(job_id=job_id)
        session.add(policy)
        session.flush()
    return policy


def get_snapshot(session: Session, snapshot_id: int) -> Snapshot:
    row = session.get(Snapshot, snapshot_id)
    if row is None:
        raise NotFound(f"no snapshot {snapshot_id}")
    return row


def load_manifest(storage: Storage, row: Snapshot) -> mf.Manifest:
    if row.manifest is None:
        raise NotFound(f"snapshot {row.id} has no manifest (state {row.state})")
    try:
        raw = storage.backend.get(row.manifest)
    except ObjectNotFound:
        raise IntegrityError(f"snapshot {row.id}: manifest {row.manifest} is missing") from None
    return mf.unpack(raw, what=f"manifest of snapshot {row.id}")


# -- taking a snapshot -------------------------------------------------------

@dataclass
class Begun:
    snapshot_id: int
    parent: mf.Manifest | None


def begin(storage: Storage, job_id: int, *, head_generation: int = 0, on_demand: bool = False,
          lease_seconds: float | None = None) -> Begun:
    """Create the pending snapshot row (one at a time per job) with deps on
    its parent's chain, so the groom keeps them while it runs."""
    with storage.reading() as s:
        parent_row = _parent(s, job_id, head_generation)
    parent = _parent_manifest(storage, parent_row)
    with storage.sessions() as s:
        s.execute(select(BackupJob.id).where(BackupJob.id == job_id).with_for_update())
        if s.get(BackupJob, job_id) is None:
            raise NotFound(f"no backup job {job_id}")
        _no_running_snapshot(s, job_id)
        if parent is not None and not _still_done(s, parent.snapshot):
            parent = None
        sid = s.execute(insert(Snapshot).values(
            job_id=job_id, store="blockstore", kind="full", state="pending",
            on_demand=on_demand, head_generation=head_generation,
            parent_id=parent.snapshot if parent else None,
            lease_until=blockindex.lease(lease_seconds or LEASE_SECONDS), created_at=utcnow(),
        ).returning(Snapshot.id)).scalar_one()
        deps = {sid} | (parent.deps() if parent else set())
        s.execute(insert(SnapshotDep), [{"snapshot_id": sid, "dep_id": d} for d in deps])
    return Begun(int(sid), parent)


def _parent(s: Session, job_id: int, generation: int) -> Snapshot | None:
    """The newest completed blockstore snapshot of this head, if it is done
    (tombstones before a newer completed one's mark may be pruned)."""
    row = s.execute(select(Snapshot).where(
        Snapshot.job_id == job_id, Snapshot.store == "blockstore",
        Snapshot.head_generation == generation, Snapshot.completed_at.is_not(None),
    ).order_by(Snapshot.head_mark.desc(), Snapshot.id.desc()).limit(1)).scalar_one_or_none()
    return row if row is not None and row.state == "done" else None


def _parent_manifest(storage: Storage, row: Snapshot | None) -> mf.Manifest | None:
    if row is None:
        return None
    try:
        return load_manifest(storage, row)
    except StorageError:
        return None  # unreadable parent: take a full snapshot instead


def _still_done(s: Session, snapshot_id: int) -> bool:
    state = s.execute(select(Snapshot.state).where(Snapshot.id == snapshot_id)
                      .with_for_update(read=True)).scalar()
    return state == "done"


def _no_running_snapshot(s: Session, job_id: int) -> None:
    now = utcnow()
    blockindex.abandon_lapsed_snapshots(s, now)
    running = s.execute(select(Snapshot.id).where(
        Snapshot.job_id == job_id, Snapshot.state == "pending")).scalar()
    if running is not None:
        raise Conflict(f"snapshot {running} of job {job_id} is being taken; "
                       "wait for it to finish")


def renew(storage: Storage, snapshot_id: int, lease_seconds: float | None = None) -> bool:
    """Extend a pending snapshot's lease; False if it is no longer pending."""
    with storage.sessions() as s:
        return s.execute(update(Snapshot).where(
            Snapshot.id == snapshot_id, Snapshot.state == "pending",
        ).values(lease_until=blockindex.lease(lease_seconds or LEASE_SECONDS))).rowcount == 1


def finish(storage: Storage, m: mf.Manifest, stats: snap.TakeStats,
           expires_at: datetime | None = None) -> None:
    """Store the manifest, then make the snapshot visible (see module doc)."""
    raw = mf.pack(m)
    name = mf.object_name(m.job, m.snapshot)
    storage.backend.put(name, raw)
    with storage.sessions() as s:
        missing = blockindex.touch_all(s, m.block_ids())
        if missing:
            raise StorageError(f"snapshot {m.snapshot}: {len(missing)} block(s) were removed "
                               f"while it was taken (first {missing[0]}); retry")
        blockindex._reference(s, m.snapshot, m.own_block_ids())
        s.execute(delete(SnapshotDep).where(SnapshotDep.snapshot_id == m.snapshot))
        s.execute(insert(SnapshotDep), [{"snapshot_id": m.snapshot, "dep_id": d}
                                        for d in sorted(m.deps())])
        done = s.execute(update(Snapshot).where(
            Snapshot.id == m.snapshot, Snapshot.state == "pending",
        ).values(state="done", kind=m.kind, optime_ts=m.optime_ts, optime_t=m.optime_t,
                 head_mark=m.mark, wall_time=datetime.fromisoformat(m.created),
                 bytes_stored=stats.bytes_stored + len(raw), bytes_logical=stats.bytes_logical,
                 docs=stats.docs, manifest=name, completed_at=utcnow(),
                 expires_at=expires_at, lease_until=None)).rowcount
        if done != 1:
            raise StorageError(f"snapshot {m.snapshot} was abandoned while it was taken "
                               "(its lease lapsed); retry")


def fail(storage: Storage, snapshot_id: int, error: str) -> None:
    with storage.sessions() as s:
        s.execute(update(Snapshot).where(
            Snapshot.id == snapshot_id, Snapshot.state == "pending",
        ).values(state="failed", error=error[:2000], lease_until=None))


def take(storage: Storage, job_id: int, head: HeadStore, *, head_generation: int = 0,
         on_demand: bool = False, opts: snap.TakeOptions | None = None,
         progress: Callable[[snap.TakeStats], None] | None = None,
         prune_tombstones: bool = True) -> int:
    """Take a snapshot of ``head`` for job ``job_id``; its id once ``done``."""
    begun = begin(storage, job_id, head_generation=head_generation, on_demand=on_demand)
    sid = begun.snapshot_id
    renewer = _Renewer(storage, sid, progress)
    try:
        with head.snapshot() as view:
            m, stats = snap.take(view, storage.blocks, snapshot_id=sid, job_id=job_id,
                                 head_generation=head_generation, parent=begun.parent,
                                 opts=opts, progress=renewer)
        finish(storage, m, stats)
    except BaseException as exc:
        fail(storage, sid, f"{type(exc).__name__}: {exc}")
        raise
    if prune_tombstones:
        head.prune_tombstones(m.mark)
    return sid


class _Renewer:
    """Progress callback that also keeps the lease of the snapshot alive."""

    def __init__(self, storage: Storage, sid: int,
                 progress: Callable[[snap.TakeStats], None] | None) -> None:
        self.storage, self.sid, self.progress = storage, sid, progress
        self.renewed = utcnow()

    def __call__(self, stats: snap.TakeStats) -> None:
        if utcnow() - self.renewed >= timedelta(seconds=RENEW_SECONDS):
            if not renew(self.storage, self.sid):
                raise StorageError(f"snapshot {self.sid} was abandoned while it was taken")
            self.renewed = utcnow()
        if self.progress is not None:
            self.progress(stats)


# -- reading, listing, deleting ----------------------------------------------

def open_snapshot(storage: Storage, snapshot_id: int) -> mf.Manifest:
    """The manifest of a done (or pinned) snapshot, for a restore."""
    with storage.reading() as s:
        row = get_snapshot(s, snapshot_id)
        now = utcnow()
        if row.store != "blockstore":
            raise NotFound(f"snapshot {snapshot_id} is in the filesystem store")
        if row.state != "done" and not (row.pinned_until and row.pinned_until > now):
            raise NotFound(f"snapshot {snapshot_id} is {row.state}, not restorable")
    return load_manifest(storage, row)


def read_collection(storage: Storage, snapshot_id: int, db: str, name: str) -> Iterator[bytes]:
    return snap.read_collection(storage.blocks, open_snapshot(storage, snapshot_id), db, name)


def pin(storage: Storage, snapshot_id: int, seconds: float) -> bool:
    """Keep a done snapshot's blocks for ``seconds`` even if it expires
    meanwhile (a restore reading it renews this); False if not done."""
    with storage.sessions() as s:
        return s.execute(update(Snapshot).where(
            Snapshot.id == snapshot_id, Snapshot.state == "done",
        ).values(pinned_until=blockindex.lease(seconds))).rowcount == 1


def list_snapshots(session: Session, job_id: int, *, include_expired: bool = False
                   ) -> list[Snapshot]:
    states = ("done", "expired") if include_expired else ("done",)
    return list(session.execute(select(Snapshot).where(
        Snapshot.job_id == job_id, Snapshot.state.in_(states),
    ).order_by(Snapshot.wall_time, Snapshot.id)).scalars())


def delete_snapshot(session: Session, snapshot_id: int, reason: str = "deleted") -> None:
    """Expire a snapshot now (a groom reclaims what nothing else needs)."""
    row = get_snapshot(session, snapshot_id)
    if row.state == "pending":
        raise Conflict(f"snapshot {snapshot_id} is being taken; delete it when it is done")
    if row.state in ("expired", "failed"):
        raise NotFound(f"snapshot {snapshot_id} is already {row.state}")
    session.execute(update(Snapshot).where(Snapshot.id == snapshot_id, Snapshot.state == "done")
                    .values(state="expired", expires_at=utcnow(), error=reason))
