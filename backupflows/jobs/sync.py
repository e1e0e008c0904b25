"""Agent work of the initial sync: the start step and slicing one range.

``start_sync`` records ``T0`` (the source's newest optime) BEFORE it lists
namespaces or reads a document, snapshots the namespace list with options
and indexes, and plans ``_id`` ranges; all of it lands in one catalog
transaction whose UPDATE of ``t0_ts`` is the claim (a repeated start finds
``t0_ts`` set and returns the ranges already planned).

``slice_range`` reads one range from its resume point and writes each slice
(about ``SLICE_BYTES`` of raw BSON, zstd) to the object store under a name
fixed by (job, generation, range, seq), then records it together with the new
resume point in one transaction, conditional on its lease: a redelivered
task continues after the last recorded slice, and a rewrite of a slice whose
record was lost replaces the same object. The next slice is read from the
source (on a thread, ``source.prefetch``) while one is compressed, stored and
recorded. A task then goes on with the job's other unclaimed ranges for a
few seconds (``more_seconds``): slicing runs back to back, not one queue
round trip per range.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from backupflows.catalog import optime
from backupflows.catalog.db import claim, session_scope
from backupflows.catalog.models import (
    BackupJob,
    JobState,
    Slice,
    SliceRange,
    SyncNamespace,
    utcnow,
)
from backupflows.jobs import resources
from backupflows.jobs.config import job_config
from backupflows.jobs.errors import LeaseLost
from backupflows.jobs.lifecycle import add_event, lease_expiry, take_range_lease
from backupflows.settings import get_settings
from backupflows.source.namespaces import NamespaceFilter, NamespaceInfo, list_namespaces
from backupflows.source.prefetch import prefetched
from backupflows.source.slicer import CollectionGone, IdRange, encode_slice, plan_ranges, read_range
from backupflows.source.slicer import Slice as SourceSlice
from backupflows.source.topology import check_replica_set, newest_optime

Progress = Callable[[dict[str, Any]], None]
PROGRESS_EVERY = 0.5  # seconds between progress reports of a slice task


@dataclass
class StartResult:
    """``planned`` (this call planned), ``already`` (planned before) or
    ``skipped`` (the job is not in this generation's initial sync)."""

    status: str
    range_ids: list[int] = field(default_factory=list)
    daemon_id: str = ""


@dataclass
class _Plan:
    t0: Any
    set_name: str
    namespaces: list[tuple[NamespaceInfo, list[IdRange]]]


def start_sync(job_id: int, generation: int) -> StartResult:
    """The first step of an initial sync (see the module docstring)."""
    with session_scope(readonly=True) as s:
        job = s.get(BackupJob, job_id)
        if job is None or job.generation != generation or job.state != JobState.INITIAL_SYNC:
            return StartResult("skipped")
        if job.t0_ts is not None:
            return StartResult("already", pending_ranges(s, job_id, generation),
                               job.daemon_id or "")
        uri = job.deployment.uri
        filt = NamespaceFilter(job.deployment.include_ns, job.deployment.exclude_ns)
    plan = _plan(uri, filt)
    with session_scope() as s:
        won = claim(s, BackupJob, job_id,
                    expected={"state": JobState.INITIAL_SYNC.value, "generation": generation,
                              "t0_ts": None},
                    values={"t0_ts": optime.pack(plan.t0), "oplog_ts": optime.pack(plan.t0)})
        job = s.get(BackupJob, job_id)
        assert job is not None
        if not won:
            return StartResult("already" if job.t0_ts else "skipped",
                               pending_ranges(s, job_id, generation), job.daemon_id or "")
        range_ids = _record_plan(s, job, plan)
        return StartResult("planned", range_ids, job.daemon_id or "")


def _plan(uri: str, filt: NamespaceFilter) -> _Plan:
    client = resources.source_client(uri)
    info = check_replica_set(client)
    t0 = newest_optime(client)  # before anything is listed or read
    slice_bytes, max_ranges = get_settings().slice_bytes, job_config().max_ranges
    out = []
    for ns in list_namespaces(client, filt):
        out.append((ns, plan_ranges(client, ns, slice_bytes, max_ranges)))
    return _Plan(t0, info.set_name, out)


def _record_plan(s: Session, job: BackupJob, plan: _Plan) -> list[int]:
    now = utcnow()
    ranges: list[SliceRange] = []
    total_bytes = total_docs = 0
    for info, id_ranges in plan.namespaces:
        ns = SyncNamespace(job_id=job.id, generation=job.generation, db=info.db, coll=info.coll,
                           uuid=info.uuid, type=info.type, options=info.options,
                           indexes=b"".join(info.indexes), count=info.count, size=info.size)
        s.add(ns)
        s.flush()
        total_bytes, total_docs = total_bytes + info.size, total_docs + info.count
        for seq, r in enumerate(id_ranges):
            ranges.append(SliceRange(job_id=job.id, generation=job.generation,
                                     namespace_id=ns.id, seq=seq, lo=r.lo, hi=r.hi,
                                     state="pending", enqueued_at=now))
    s.add_all(ranges)
    s.flush()
    add_event(s, job, "sync.planned",
              f"T0 {_fmt(plan.t0)} on replica set {plan.set_name}: {len(plan.namespaces)} "
              f"namespaces, {len(ranges)} ranges, about {total_docs} documents "
              f"({total_bytes / 1e6:.1f} MB)",
              t0={"t": plan.t0.time, "i": plan.t0.inc}, namespaces=len(plan.namespaces),
              ranges=len(ranges), docs=total_docs, bytes=total_bytes)
    return [r.id for r in ranges]


def pending_ranges(s: Session, job_id: int, generation: int) -> list[int]:
    return list(s.scalars(select(SliceRange.id).where(
        SliceRange.job_id == job_id, SliceRange.generation == generation,
        SliceRange.state == "pending").order_by(SliceRange.id)))


def _fmt(ts: Any) -> str:
    return f"Timestamp({ts.time}, {ts.inc})"


# -- slicing ---------------------------------------------------------------------------

@dataclass
class _RangeWork:
    job_id: int
    generation: int
    range_id: int
    uri: str
    ns: str
    lo: bytes | None
    hi: bytes | None
    resume_after: bytes | None
    seq: int
    docs: int
    nbytes: int


def slice_range(range_id: int, owner: str, progress: Progress | None = None, *,
                more_seconds: float = 0.0) -> str:
    """Slice one range to the end; returns ``done``, ``skipped`` or ``busy``.

    With ``more_seconds``, go on with the job's other pending ranges that no
    live lease holds (each claimed by its lease, as its own task would) until
    none is left or ``more_seconds`` have passed: one task slices back to
    back instead of one queue round trip per range, and the tasks of the
    ranges it took find them done (``skipped``) or held (``busy``), and look
    for others in turn. A retried task (its range done, or released after a
    source error) also picks up what is left."""
    status, work = _claim(range_id, owner)
    first = [work] if status == "claimed" and work is not None else []
    job = None
    if more_seconds > 0:
        job = (work.job_id, work.generation) if work is not None else _range_job(range_id)
    if first or job is not None:
        more = _claim_more(job, owner, time.monotonic() + more_seconds, {range_id})
        _slice_ranges(itertools.chain(first, more), owner, progress)
    return "done" if first else status


def _claim(range_id: int, owner: str) -> tuple[str, _RangeWork | None]:
    """``claimed`` (this owner holds the range's lease), ``busy`` or ``skipped``."""
    with session_scope(readonly=True) as s:
        work = _load_range(s, range_id)
    if work is None:
        return "skipped", None
    with session_scope() as s:
        if not take_range_lease(s, range_id, owner, job_config().lease_seconds):
            return "busy", work
    return "claimed", work


def _claim_more(job: tuple[int, int] | None, owner: str, deadline: float,
                tried: set[int]) -> Iterator[_RangeWork]:
    """Further free ranges of ``job``, each claimed when the one before has
    been read, until ``deadline``."""
    while job is not None and time.monotonic() < deadline and _loading(*job):
        nxt = _free_range(*job, tried)
        if nxt is None:
            return
        tried.add(nxt)
        status, work = _claim(nxt, owner)
        if status == "claimed" and work is not None:
            yield work


def _loading(job_id: int, generation: int) -> bool:
    """Whether a slice task should take more ranges: without preload always;
    with it only while a preload holds (or is queued with) the head lease.
    Otherwise the pool processes may all be slicing while the preload waits
    in the queue, and the head would be loaded only after the slicing,
    instead of during it: the task ends with its own range and gives its
    process back."""
    if not job_config().preload:
        return True
    table = BackupJob.__table__
    with session_scope(readonly=True) as s:
        return s.execute(select(table.c.id).where(
            table.c.id == job_id, table.c.generation == generation,
            table.c.head_lease_owner.is_not(None),
            table.c.head_lease_expires > utcnow())).first() is not None


def _slice_ranges(ranges: Iterator[_RangeWork], owner: str, progress: Progress | None) -> None:
    """Read, store and record every slice of ``ranges`` (claimed), finishing
    each range after its last slice. The source is read on a thread, one
    slice ahead and across range ends, while this thread compresses, stores
    and records: the slicer keeps pace with the source. On an error every
    range claimed and not finished is released (a retry may take it at once)."""
    open_ranges: dict[int, _RangeWork] = {}

    def claimed() -> Iterator[_RangeWork]:
        for work in ranges:
            open_ranges[work.range_id] = work
            yield work

    store, seconds = resources.object_store(), job_config().lease_seconds
    items = prefetched(_read_ranges(claimed()), chunk=1, depth=1)
    reported = 0.0
    try:
        with closing(items):
            for work, item in items:
                if isinstance(item, SourceSlice):
                    _store_slice(work, owner, store, item, seconds)
                    if progress is not None and time.monotonic() - reported >= PROGRESS_EVERY:
                        reported = time.monotonic()
                        progress({"job": work.job_id, "generation": work.generation,
                                  "ns": work.ns, "range": work.range_id,
                                  "slices_done": work.seq, "docs": work.docs,
                                  "bytes": work.nbytes})
                    continue
                _end_range(work, owner, item)
                del open_ranges[work.range_id]
    except BaseException:
        for work in open_ranges.values():
            release_range_lease(work.range_id, owner)
        raise


def _read_ranges(ranges: Iterator[_RangeWork]
                 ) -> Iterator[tuple[_RangeWork, SourceSlice | CollectionGone | None]]:
    """``(range, slice)`` of every range in turn, then ``(range, None)`` at its
    end, or ``(range, CollectionGone)`` when its collection went away."""
    slice_bytes = get_settings().slice_bytes
    for work in ranges:
        client = resources.source_client(work.uri)
        try:
            for sl in read_range(client, work.ns, work.lo, work.hi, work.resume_after,
                                 slice_bytes):
                yield work, sl
        except CollectionGone as exc:
            yield work, exc
            continue
        yield work, None


def _end_range(work: _RangeWork, owner: str, gone: CollectionGone | None) -> None:
    if gone is not None:
        with session_scope() as s:
            add_event(s, work.job_id, "sync.collection_gone",
                      f"{work.ns}: {gone}; the oplog carries the change and validation "
                      "compares the rest", ns=work.ns)
    with session_scope() as s:
        if not _finish(s, work.range_id, owner):
            raise LeaseLost(f"range {work.range_id} of {work.ns}: lease lost before it was "
                            "finished")


def _range_job(range_id: int) -> tuple[int, int] | None:
    with session_scope(readonly=True) as s:
        r = s.get(SliceRange, range_id)
        return (r.job_id, r.generation) if r is not None else None


def _free_range(job_id: int, generation: int, tried: set[int]) -> int | None:
    """The first pending range of the job that no live lease holds."""
    table = SliceRange.__table__
    now = utcnow()
    with session_scope(readonly=True) as s:
        query = (select(table.c.id).where(
            table.c.job_id == job_id, table.c.generation == generation,
            table.c.state == "pending",
            or_(table.c.lease_owner.is_(None), table.c.lease_expires.is_(None),
                table.c.lease_expires < now))
            .order_by(table.c.id).limit(1))
        if tried:
            query = query.where(table.c.id.not_in(tried))
        return s.scalar(query)


def _load_range(s: Session, range_id: int) -> _RangeWork | None:
    r = s.get(SliceRange, range_id)
    if r is None or r.state == "done":
        return None
    job = s.get(BackupJob, r.job_id)
    ns = s.get(SyncNamespace, r.namespace_id)
    if (job is None or ns is None or job.generation != r.generation
            or job.state != JobState.INITIAL_SYNC):
        return None
    return _RangeWork(job.id, r.generation, r.id, job.deployment.uri, ns.ns, r.lo, r.hi,
                      r.resume_after, r.slices, r.docs, r.nbytes)


def _store_slice(work: _RangeWork, owner: str, store: Any, sl: Any, seconds: int) -> None:
    """Write one slice to the object store and record it (with the new resume
    point), both under the range's lease."""
    name = resources.slice_name(work.job_id, work.generation, work.range_id, work.seq)
    with session_scope() as s:
        if not take_range_lease(s, work.range_id, owner, seconds):
            raise LeaseLost(f"range {work.range_id} of {work.ns}: lease lost")
    store.put(name, encode_slice(sl, work.ns, job=work.job_id, generation=work.generation,
                                 range=work.range_id, seq=work.seq))
    with session_scope() as s:
        if not _record_slice(s, work, owner, name, sl, seconds):
            raise LeaseLost(f"range {work.range_id} of {work.ns}: lease lost")
    work.seq, work.docs, work.nbytes = work.seq + 1, work.docs + sl.count, work.nbytes + sl.nbytes


def _record_slice(s: Session, work: _RangeWork, owner: str, name: str, sl: Any,
                  seconds: int) -> bool:
    table = SliceRange.__table__
    hit = s.execute(update(table).where(
        table.c.id == work.range_id, table.c.lease_owner == owner,
        table.c.slices == work.seq, table.c.state == "pending",
    ).values(slices=work.seq + 1, docs=table.c.docs + sl.count,
             nbytes=table.c.nbytes + sl.nbytes, resume_after=sl.last_id_raw,
             lease_expires=lease_expiry(seconds), updated_at=utcnow())).rowcount == 1
    if hit:
        s.add(Slice(range_id=work.range_id, seq=work.seq, object_name=name, docs=sl.count,
                    nbytes=sl.nbytes, first_key=sl.first_key, last_key=sl.last_key))
    return hit


def release_range_lease(range_id: int, owner: str) -> None:
    table = SliceRange.__table__
    with session_scope() as s:
        s.execute(update(table).where(table.c.id == range_id, table.c.lease_owner == owner)
                  .values(lease_owner=None, lease_expires=None))


def _finish(s: Session, range_id: int, owner: str) -> bool:
    table = SliceRange.__table__
    return s.execute(update(table).where(
        table.c.id == range_id, table.c.lease_owner == owner, table.c.state == "pending",
    ).values(state="done", lease_owner=None, lease_expires=None,
             updated_at=utcnow())).rowcount == 1
