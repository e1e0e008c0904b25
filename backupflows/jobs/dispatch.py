"""What the beat dispatchers queue, decided from the catalog.

Each function returns ``Work`` items for the task layer to send. Before a
dispatcher queues work guarded by a lease it reserves that lease with a fresh
token (``q-<hex>``), passed to the task: the queued task takes over its own
reservation, and the next dispatcher pass sees the lease taken, so a slow
queue does not fill up with copies. A reservation whose message was lost
expires like any lease. An oplog round or a routine apply round queued by
the one before it may take a reservation over (``take_reserved``): it does
the same work, and waiting behind the reserved message would only add lag
(with one free pool process, that message may sit behind other work).

- ``due_oplog_rounds``: every active job whose oplog lease is free.
- ``due_apply_rounds``: every routine job with stored oplog the head has not
  applied (``oplog_ts > head_ts``) and a free head lease.
- ``reconcile``: work a lost message, a lost chord or a broker restart left
  behind: an initial sync never started, ranges not claimed for
  ``REQUEUE_SECONDS`` (or whose worker died: expired lease), a preload lost
  while ranges are sliced, every range sliced but no build running, a build
  or a validation with no worker.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session

from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, JobState, SliceRange, utcnow
from backupflows.jobs.config import job_config
from backupflows.jobs.lifecycle import ACTIVE, HEAD, OPLOG, RESERVED, take_job_lease


@dataclass(frozen=True)
class Work:
    """One task to send: ``kind`` in start | slice | preload | build | validate |
    oplog_round | apply_round."""

    kind: str
    job_id: int
    generation: int
    daemon_id: str
    token: str | None = None
    range_id: int | None = None


def _token() -> str:
    return RESERVED + secrets.token_hex(8)


def due_oplog_rounds() -> list[Work]:
    seconds = job_config().oplog_lease_seconds
    out = []
    with session_scope() as s:
        rows = s.execute(select(BackupJob.id, BackupJob.generation, BackupJob.daemon_id).where(
            BackupJob.state.in_(ACTIVE), BackupJob.oplog_ts.is_not(None),
            _lease_free(BackupJob.oplog_lease_owner, BackupJob.oplog_lease_expires))).all()
        for job_id, generation, daemon_id in rows:
            token = _token()
            if take_job_lease(s, job_id, OPLOG, token, seconds, states=ACTIVE,
                              generation=generation):
                out.append(Work("oplog_round", job_id, generation, daemon_id or "", token))
    return out


def due_apply_rounds() -> list[Work]:
    seconds = job_config().lease_seconds
    out = []
    with session_scope() as s:
        rows = s.execute(select(BackupJob.id, BackupJob.generation, BackupJob.daemon_id).where(
            BackupJob.state == JobState.ROUTINE, BackupJob.oplog_ts.is_not(None),
            BackupJob.oplog_ts > func.coalesce(BackupJob.head_ts, 0),
            _lease_free(BackupJob.head_lease_owner, BackupJob.head_lease_expires))).all()
        for job_id, generation, daemon_id in rows:
            token = _token()
            if take_job_lease(s, job_id, HEAD, token, seconds, states=[JobState.ROUTINE],
                              generation=generation):
                out.append(Work("apply_round", job_id, generation, daemon_id or "", token))
    return out


def _lease_free(owner: Any, expires: Any) -> Any:
    now = utcnow()
    return or_(owner.is_(None), expires.is_(None), expires < now)


def reconcile() -> list[Work]:
    """Re-queue work nothing is doing (see the module docstring)."""
    out: list[Work] = []
    with session_scope() as s:
        out += _lost_starts(s)
        out += _lost_ranges(s)
        out += _lost_head_work(s)
    return out


def _lost_starts(s: Session) -> list[Work]:
    cutoff = utcnow() - timedelta(seconds=job_config().requeue_seconds)
    rows = s.execute(select(BackupJob.id, BackupJob.generation, BackupJob.daemon_id).where(
        BackupJob.state == JobState.INITIAL_SYNC, BackupJob.t0_ts.is_(None),
        BackupJob.updated_at < cutoff)).all()
    out = []
    for job_id, generation, daemon_id in rows:
        s.execute(update(BackupJob.__table__).where(BackupJob.__table__.c.id == job_id)
                  .values(updated_at=utcnow()))
        out.append(Work("start", job_id, generation, daemon_id or ""))
    return out


def _lost_ranges(s: Session) -> list[Work]:
    now = utcnow()
    cutoff = now - timedelta(seconds=job_config().requeue_seconds)
    table = SliceRange.__table__
    dead = (table.c.lease_owner.is_not(None)) & (table.c.lease_expires < now)
    stale = (table.c.lease_owner.is_(None)) & (
        table.c.enqueued_at.is_(None) | (table.c.enqueued_at < cutoff))
    rows = s.execute(
        select(table.c.id, table.c.job_id, table.c.generation, BackupJob.daemon_id)
        .join(BackupJob, BackupJob.id == table.c.job_id)
        .where(table.c.state == "pending", BackupJob.state == JobState.INITIAL_SYNC,
               BackupJob.generation == table.c.generation, dead | stale)).all()
    out = []
    for range_id, job_id, generation, daemon_id in rows:
        s.execute(update(table).where(table.c.id == range_id).values(enqueued_at=now))
        out.append(Work("slice", job_id, generation, daemon_id or "", range_id=range_id))
    return out


def _lost_head_work(s: Session) -> list[Work]:
    seconds = job_config().lease_seconds
    pending = exists().where(SliceRange.job_id == BackupJob.id,
                             SliceRange.generation == BackupJob.generation,
                             SliceRange.state == "pending")
    syncing = (BackupJob.state == JobState.INITIAL_SYNC) & BackupJob.t0_ts.is_not(None)
    wanted = (syncing & ~pending) | BackupJob.state.in_([JobState.BUILDING,
                                                          JobState.VALIDATING])
    if job_config().preload:
        wanted = wanted | (syncing & pending)  # a preload lost with its worker
    rows = s.execute(select(BackupJob.id, BackupJob.generation, BackupJob.daemon_id,
                            BackupJob.state, pending).where(
        wanted, _lease_free(BackupJob.head_lease_owner, BackupJob.head_lease_expires))).all()
    out = []
    for job_id, generation, daemon_id, state, slicing in rows:
        token = _token()
        if not take_job_lease(s, job_id, HEAD, token, seconds, states=[state],
                              generation=generation):
            continue
        kind = {JobState.VALIDATING: "validate"}.get(state, "preload" if slicing else "build")
        out.append(Work(kind, job_id, generation, daemon_id or "", token))
    return out
