"""Daemon work on the head: build it from the slices, apply stored oplog.

All head work of a job holds the job's *head lease* (one writer per head):

- ``build_head``: ``initial_sync -> building`` once every range is sliced
  (the transition is the claim), then create the namespaces recorded at the
  start (options, UUIDs, indexes) and bulk-load every slice not yet loaded.
  A slice is marked loaded after the head committed it; loading it again
  after a crash gives the same head (idempotent per slice).
- ``apply_round``: in ``building`` (every slice loaded) it applies the stored
  segments from ``T0`` and moves the job to ``validating``; in ``routine`` it
  applies the segments after the head's own optime and records ``head_ts``
  and the lag. The head's optime is committed with the data it covers, so a
  crash anywhere resumes from the head itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, func, select, update

from backupflows.catalog.db import session_scope
from backupflows.catalog.models import (
    BackupJob,
    JobState,
    Slice,
    SliceRange,
    SyncNamespace,
    utcnow,
)
from backupflows.errors import OplogError, ResyncRequired
from backupflows.head.store import HeadStore
from backupflows.jobs import resources
from backupflows.jobs.config import job_config
from backupflows.jobs.entryfilter import filter_entries
from backupflows.jobs.errors import LeaseLost, StepFailed
from backupflows.jobs.lifecycle import (
    HEAD,
    Outcome,
    fail,
    lag_seconds,
    lease_free,
    release_job_lease,
    renew_job_lease,
    require_resync,
    take_job_lease,
    transition,
)
from backupflows.jobs.oplogstore import segment_entries, segments_after
from backupflows.oplog.applier import Applier, ApplyStats
from backupflows.oplog.segments import entry_ts
from backupflows.source.namespaces import NamespaceFilter
from backupflows.source.rawdocs import split
from backupflows.source.slicer import decode_slice

Progress = Callable[[dict[str, Any]], None]
PRELOAD_POLL = 0.05  # seconds between a preload's looks for new slices (one read each)


@dataclass
class HeadRun:
    """One task's hold on a job's head lease."""

    job_id: int
    generation: int
    owner: str
    state: str
    filt: NamespaceFilter = field(default_factory=NamespaceFilter)
    progress: Progress | None = None
    renewed: float = field(default_factory=time.monotonic)
    reported: float = 0.0

    def renew(self, **values: Any) -> None:
        """Extend the lease (and write ``values``); ``LeaseLost`` if it is gone."""
        with session_scope() as s:
            if not renew_job_lease(s, self.job_id, HEAD, self.owner, job_config().lease_seconds,
                                   states=[self.state], generation=self.generation,
                                   values=values):
                raise LeaseLost(f"job {self.job_id}: head lease lost (job stopped, resynced "
                                "or taken over)")
        self.renewed = time.monotonic()

    def renew_soon(self) -> None:
        """``renew`` once a quarter of the lease has gone by since the last
        renewal (a catalog write per slice or per poll is not needed)."""
        if time.monotonic() - self.renewed >= job_config().lease_seconds / 4:
            self.renew()

    def release(self) -> None:
        with session_scope() as s:
            release_job_lease(s, self.job_id, HEAD, self.owner)

    def report(self, *, every: float = 0.0, **meta: Any) -> None:
        """Report progress; with ``every``, at most once per ``every`` seconds."""
        if self.progress is None:
            return
        now = time.monotonic()
        if every and now - self.reported < every:
            return
        self.reported = now
        self.progress({"job": self.job_id, "generation": self.generation, **meta})


def _filter_of(job: BackupJob) -> NamespaceFilter:
    return NamespaceFilter(job.deployment.include_ns, job.deployment.exclude_ns)


# -- build --------------------------------------------------------------------------------

def build_head(job_id: int, generation: int, owner: str, token: str | None = None,
               progress: Progress | None = None) -> str:
    """Load every slice into the head; returns ``loaded``, ``waiting`` or ``skipped``.
    In ``initial_sync`` it waits (a few seconds at most) for a preload that still
    holds the head lease to finish its last slices."""
    deadline = time.monotonic() + job_config().lease_seconds + 5
    while True:
        with session_scope() as s:
            status = _claim_build(s, job_id, generation, owner, token)
        if status != "preloading" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if status != "claimed":
        return "waiting" if status == "preloading" else status
    run = HeadRun(job_id, generation, owner, JobState.BUILDING.value, progress=progress)
    with _open_head(job_id, generation) as head:
        _load_slices(head, run)
    run.release()
    return "loaded"


def preload_slices(job_id: int, generation: int, owner: str, token: str | None = None,
                   progress: Progress | None = None) -> str:
    """Load slices into the head while the ranges are still being sliced, so
    the build that follows the last range has little left to do. Holds the
    head lease in ``initial_sync``; ends when every range is sliced and every
    recorded slice loaded (``loaded``), after a few seconds (``later``: the
    task queues the next one; ``reconcile`` does if that message is lost), or
    ``busy``/``skipped``. It looks for new slices every ``PRELOAD_POLL`` s."""
    seconds = job_config().lease_seconds
    with session_scope() as s:
        if not take_job_lease(s, job_id, HEAD, owner, seconds, states=[JobState.INITIAL_SYNC],
                              generation=generation, token=token,
                              where=[BackupJob.t0_ts.is_not(None)]):
            return "busy"
    run = HeadRun(job_id, generation, owner, JobState.INITIAL_SYNC.value, progress=progress)
    # bounded like every task here: a worker with one pool process must get its slot
    # back for the slicing this waits for; the task queues the next preload
    deadline = time.monotonic() + max(2, min(10, seconds // 3))
    status = "loaded"
    with _open_head(job_id, generation) as head:
        while _load_slices(head, run) or _ranges_pending(job_id, generation):
            if time.monotonic() > deadline:
                status = "later"
                break
            time.sleep(PRELOAD_POLL)
            run.renew_soon()
    run.release()
    return status


@contextmanager
def _open_head(job_id: int, generation: int) -> Iterator[HeadStore]:
    """The job's head, with the namespaces of the sync created and its optime
    at least T0 (the slices hold the state of T0 or later)."""
    with session_scope(readonly=True) as s:
        namespaces = s.scalars(select(SyncNamespace).where(
            SyncNamespace.job_id == job_id, SyncNamespace.generation == generation)
            .order_by(SyncNamespace.id)).all()
        job = s.get(BackupJob, job_id)
        t0 = job.t0_ts if job is not None else None
    with HeadStore(resources.head_path(job_id, generation)) as head:
        for ns in namespaces:
            head.ensure_collection(ns.db, ns.coll, uuid=ns.uuid, type=ns.type,
                                   options=ns.options, indexes=list(split(ns.indexes)))
        if t0 and head.optime().ts < t0:
            with head.transaction() as w:
                w.set_optime(t0, head.optime().t)
        yield head


def _ranges_pending(job_id: int, generation: int) -> bool:
    with session_scope(readonly=True) as s:
        return s.execute(select(SliceRange.id).where(
            SliceRange.job_id == job_id, SliceRange.generation == generation,
            SliceRange.state == "pending").limit(1)).first() is not None


def _claim_build(s: Any, job_id: int, generation: int, owner: str, token: str | None) -> str:
    job = s.get(BackupJob, job_id)
    if job is None or job.generation != generation:
        return "skipped"
    seconds = job_config().lease_seconds
    now = utcnow()
    lease = {"head_lease_owner": owner, "head_lease_expires": now + _seconds(seconds)}
    if job.state == JobState.INITIAL_SYNC:
        pending = exists().where(SliceRange.job_id == job_id,
                                 SliceRange.generation == generation,
                                 SliceRange.state == "pending")
        table = BackupJob.__table__
        if transition(s, job_id, JobState.BUILDING, from_=[JobState.INITIAL_SYNC],
                      generation=generation, values=lease,
                      where=[table.c.t0_ts.is_not(None), ~pending,
                             lease_free(table.c.head_lease_owner, table.c.head_lease_expires,
                                        now, token)],
                      message="initial_sync -> building: every range is sliced"):
            return "claimed"
        return "waiting" if s.execute(select(pending)).scalar() else "preloading"
    if job.state == JobState.BUILDING and take_job_lease(
            s, job_id, HEAD, owner, seconds, states=[JobState.BUILDING], generation=generation,
            token=token):
        return "claimed"
    return "skipped"


def _seconds(n: int) -> Any:
    from datetime import timedelta

    return timedelta(seconds=n)


def _slices_query(job_id: int, generation: int) -> Any:
    return (select(Slice.id, Slice.object_name, SyncNamespace.db, SyncNamespace.coll,
                   Slice.docs, Slice.nbytes)
            .join(SliceRange, Slice.range_id == SliceRange.id)
            .join(SyncNamespace, SliceRange.namespace_id == SyncNamespace.id)
            .where(SliceRange.job_id == job_id, SliceRange.generation == generation)
            .order_by(Slice.id))


def _load_slices(head: HeadStore, run: HeadRun) -> int:
    """Load every recorded slice not loaded yet; returns how many."""
    with session_scope(readonly=True) as s:
        query = _slices_query(run.job_id, run.generation)
        todo = s.execute(query.where(Slice.loaded.is_(False))).all()
        total = int(s.scalar(select(func.count()).select_from(query.subquery())) or 0)
    store = resources.object_store()
    done, docs, nbytes = total - len(todo), 0, 0
    for slice_id, name, db, coll, n_docs, n_bytes in todo:
        head.load_slice(db, coll, decode_slice(store.get(name)))
        with session_scope() as s:
            s.execute(update(Slice.__table__).where(Slice.__table__.c.id == slice_id)
                      .values(loaded=True))
        run.renew_soon()
        done, docs, nbytes = done + 1, docs + n_docs, nbytes + n_bytes
        run.report(step="build", slices_done=done, slices_total=total, docs=docs,
                   bytes=nbytes, every=0.0 if done == total else 0.5)
    return len(todo)


# -- apply --------------------------------------------------------------------------------

def apply_round(job_id: int, owner: str, token: str | None = None,
                progress: Progress | None = None) -> Outcome:
    """Apply stored oplog to the head (see the module docstring). Status
    ``applied``, ``validating`` (catch-up after the build done), ``waiting``,
    ``busy``, ``resync`` or ``skipped``."""
    with session_scope() as s:
        job = s.get(BackupJob, job_id)
        if job is None or job.state not in (JobState.BUILDING, JobState.ROUTINE):
            return Outcome("skipped")
        if job.state == JobState.BUILDING and _unloaded(s, job_id, job.generation):
            return Outcome("waiting")
        if not take_job_lease(s, job_id, HEAD, owner, job_config().lease_seconds,
                              states=[job.state], generation=job.generation, token=token,
                              take_reserved=job.state == JobState.ROUTINE):
            return Outcome("busy")
        run = HeadRun(job_id, job.generation, owner, job.state, _filter_of(job), progress)
    try:
        with HeadStore(resources.head_path(job_id, run.generation)) as head:
            applied = apply_stored(head, run)
    except OplogError as exc:
        return head_failure(run, exc)
    if run.state == JobState.BUILDING:
        return Outcome(_to_validating(run))
    _finish_routine(run, applied)
    return Outcome("applied", entries=applied)


def _unloaded(s: Any, job_id: int, generation: int) -> bool:
    q = _slices_query(job_id, generation).where(Slice.loaded.is_(False)).limit(1)
    return s.execute(q).first() is not None


def apply_stored(head: HeadStore, run: HeadRun, upto: int | None = None) -> int:
    """Apply every stored segment after the head's optime (up to ``upto``),
    filtered by the deployment's namespace filter; returns entries applied."""
    position = head.optime().ts
    with session_scope(readonly=True) as s:
        segments = segments_after(s, run.job_id, run.generation, position, upto)
    applied = 0

    def on_batch(stats: ApplyStats) -> None:
        run.renew()
        run.report(step="apply", entries=applied + stats.entries)

    applier = Applier(head, progress=on_batch)
    batch = job_config().apply_batch
    for _after, last, name in segments:
        floor = position
        entries = (raw for raw in segment_entries(name) if entry_ts(raw) > floor)
        applied += applier.apply(filter_entries(entries, run.filt), batch_size=batch).entries
        if head.optime().ts < last:
            with head.transaction() as w:  # only filtered/no entries after the last applied
                w.set_optime(last, head.optime().t)
        position = last
        run.renew(head_ts=last)
    return applied


def _to_validating(run: HeadRun) -> str:
    with session_scope() as s:
        moved = transition(s, run.job_id, JobState.VALIDATING, from_=[JobState.BUILDING],
                           generation=run.generation,
                           message="building -> validating: head built and caught up",
                           values={"head_lease_owner": None, "head_lease_expires": None})
    return "validating" if moved else "skipped"


def _finish_routine(run: HeadRun, applied: int) -> None:
    with session_scope() as s:
        job = s.get(BackupJob, run.job_id)
        assert job is not None
        lag = lag_seconds(job.head_ts, job.source_ts)
        s.execute(update(BackupJob.__table__).where(
            BackupJob.__table__.c.id == run.job_id,
            BackupJob.__table__.c.head_lease_owner == run.owner,
        ).values(lag_seconds=lag, last_apply_at=utcnow(), head_lease_owner=None,
                 head_lease_expires=None))


def head_failure(run: HeadRun, exc: OplogError) -> Outcome:
    """An entry the head cannot apply: ``ResyncRequired`` (importCollection)
    starts over; any other ``OplogError`` fails the job (``StepFailed``)."""
    if isinstance(exc, ResyncRequired):
        with session_scope() as s:
            _, new = require_resync(s, run.job_id, run.generation, str(exc))
        return Outcome("resync", new_generation=new)
    with session_scope() as s:
        fail(s, run.job_id, run.generation, f"applying the oplog: {exc}")
    raise StepFailed(str(exc)) from None
