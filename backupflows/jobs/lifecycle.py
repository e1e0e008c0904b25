"""The life of a backup job: states, transitions, events and leases.

Every transition is ONE conditional UPDATE (``... WHERE id = :id AND state IN
(:from) [AND generation = :g]``): the UPDATE is the claim, so of two workers
racing for the same transition exactly one wins, and only the winner writes
the ``Event`` that tells operators what happened (same transaction).

::

    initial_sync -> building -> validating -> routine
    any active state -> stopped | resync_required | failed
    stopped -> routine (head kept) | initial_sync (new generation)
    resync_required | failed -> initial_sync (new generation)
    anything but terminated -> terminated

A *generation* is one initial sync and the head it builds: a resync starts the
next generation (new T0, new ranges, new head file); work of an older
generation finds its conditions false and stops.

Leases: work that must run one at a time per job (oplog rounds; head work:
build, apply, validate) or per range (slicing) is claimed by writing an owner
and an expiry. A lease is free when it has no owner, has expired, or its
owner is the ``token`` a dispatcher wrote when it queued the task (so a queued
task takes over its own reservation). A killed worker's lease expires after
``LEASE_SECONDS``; the reconcile dispatcher then queues the work again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, or_, update
from sqlalchemy.orm import Session

from backupflows.catalog import optime
from backupflows.catalog.models import BackupJob, Event, JobState, SliceRange, utcnow

ACTIVE: tuple[str, ...] = (JobState.INITIAL_SYNC, JobState.BUILDING, JobState.VALIDATING,
                           JobState.ROUTINE)
RESTARTABLE: tuple[str, ...] = (JobState.STOPPED, JobState.RESYNC_REQUIRED, JobState.FAILED)
OPLOG, HEAD = "oplog", "head"
RESERVED = "q-"  # lease owner prefix of a dispatcher's reservation (a queued message)


@dataclass
class Outcome:
    """What a step did (``status``), and the generation a resync it caused started."""

    status: str
    new_generation: int | None = None
    entries: int = 0

#: what a new generation starts from (everything of the previous one forgotten)
_FRESH_GENERATION: dict[str, Any] = {
    "state": JobState.INITIAL_SYNC.value, "t0_ts": None, "head_ts": None, "oplog_ts": None,
    "source_ts": None, "lag_seconds": None, "error": None, "synced_at": None,
    "last_round_at": None, "last_apply_at": None, "oplog_lease_owner": None,
    "oplog_lease_expires": None, "head_lease_owner": None, "head_lease_expires": None,
}


def add_event(session: Session, job: BackupJob | int, kind: str, message: str,
              deployment_id: int | None = None, **data: Any) -> None:
    """Append one line to the job's history (in the caller's transaction)."""
    if isinstance(job, BackupJob):
        job_id, deployment_id = job.id, job.deployment_id
    else:
        job_id = job
        if deployment_id is None:
            found = session.get(BackupJob, job_id)
            deployment_id = found.deployment_id if found is not None else None
    session.add(Event(job_id=job_id, deployment_id=deployment_id, kind=kind,
                      message=message, data=data))


def _job_update(session: Session, job_id: int, conditions: Iterable[Any],
                values: Mapping[str, Any]) -> bool:
    table: Table = BackupJob.__table__  # type: ignore[assignment]
    stmt = (update(table).where(table.c.id == job_id, *conditions)
            .values(**dict(values), updated_at=utcnow()))
    return session.execute(stmt).rowcount == 1


def transition(session: Session, job_id: int, to: str, *, from_: Iterable[str],
               message: str, generation: int | None = None,
               values: Mapping[str, Any] | None = None, where: Iterable[Any] = (),
               **data: Any) -> bool:
    """Move the job to ``to`` if it is in one of ``from_`` (and at
    ``generation``, and ``where`` holds); writes a ``job.state`` event when it does."""
    table = BackupJob.__table__
    sources = [str(s) for s in from_]
    conditions = [table.c.state.in_(sources), *where]
    if generation is not None:
        conditions.append(table.c.generation == generation)
    before = session.get(BackupJob, job_id)
    old_state = before.state if before is not None else None
    if not _job_update(session, job_id, conditions, {"state": str(to), **(values or {})}):
        return False
    session.expire_all()
    add_event(session, job_id, "job.state", message, **{"from": old_state, "to": str(to),
                                                          **data})
    return True


def begin_generation(session: Session, job: BackupJob, reason: str,
                     from_: Iterable[str]) -> int | None:
    """Start the next initial sync (generation + 1) if ``job`` is still at its
    generation in one of ``from_``; returns the new generation or None."""
    table = BackupJob.__table__
    generation = job.generation + 1
    conditions = [table.c.generation == job.generation,
                  table.c.state.in_([str(s) for s in from_])]
    old_state = job.state
    if not _job_update(session, job.id, conditions, {**_FRESH_GENERATION,
                                                      "generation": generation}):
        return None
    session.expire_all()
    add_event(session, job.id, "sync.started",
              f"initial sync (generation {generation}) started: {reason}",
              generation=generation, reason=reason)
    add_event(session, job.id, "job.state", f"{old_state} -> initial_sync: {reason}",
              **{"from": old_state, "to": JobState.INITIAL_SYNC.value})
    return generation


# -- leases ---------------------------------------------------------------------

def lease_expiry(seconds: int, now: datetime | None = None) -> datetime:
    return (now or utcnow()) + timedelta(seconds=seconds)


def lease_free(owner_col: Any, expires_col: Any, now: datetime, token: str | None) -> Any:
    """SQL condition: the lease is free (or reserved for ``token``)."""
    return _free(owner_col, expires_col, now, token)


def _free(owner_col: Any, expires_col: Any, now: datetime, token: str | None,
          reserved: bool = False) -> Any:
    free = or_(owner_col.is_(None), expires_col.is_(None), expires_col < now)
    if reserved:
        free = or_(free, owner_col.like(RESERVED + "%"))
    return or_(free, owner_col == token) if token else free


def take_job_lease(session: Session, job_id: int, kind: str, owner: str, seconds: int, *,
                   states: Iterable[str], generation: int | None = None,
                   token: str | None = None, values: Mapping[str, Any] | None = None,
                   where: Iterable[Any] = (), take_reserved: bool = False) -> bool:
    """Claim the job's ``kind`` lease (``oplog`` or ``head``) for ``owner``.
    With ``take_reserved`` a dispatcher's reservation (``RESERVED``: a queued
    message, not a running task) counts as free: for work that any task of
    its kind does the same way (oplog rounds, routine apply rounds), the task
    that runs first does it, and the reserved message finds the lease held
    (``busy``) or free again (a round with little to do)."""
    table = BackupJob.__table__
    now = utcnow()
    owner_col, expires_col = table.c[f"{kind}_lease_owner"], table.c[f"{kind}_lease_expires"]
    conditions = [table.c.state.in_([str(s) for s in states]),
                  _free(owner_col, expires_col, now, token, take_reserved), *where]
    if generation is not None:
        conditions.append(table.c.generation == generation)
    return _job_update(session, job_id, conditions, {
        f"{kind}_lease_owner": owner, f"{kind}_lease_expires": lease_expiry(seconds, now),
        **(values or {})})


def renew_job_lease(session: Session, job_id: int, kind: str, owner: str, seconds: int, *,
                    states: Iterable[str], generation: int,
                    values: Mapping[str, Any] | None = None) -> bool:
    """Extend a lease ``owner`` holds (False: lost, or the job moved on)."""
    table = BackupJob.__table__
    conditions = [table.c[f"{kind}_lease_owner"] == owner,
                  table.c.state.in_([str(s) for s in states]),
                  table.c.generation == generation]
    return _job_update(session, job_id, conditions, {
        f"{kind}_lease_expires": lease_expiry(seconds), **(values or {})})


def release_job_lease(session: Session, job_id: int, kind: str, owner: str) -> None:
    """Give the lease back (no-op when ``owner`` no longer holds it)."""
    table = BackupJob.__table__
    _job_update(session, job_id, [table.c[f"{kind}_lease_owner"] == owner],
                {f"{kind}_lease_owner": None, f"{kind}_lease_expires": None})


def take_range_lease(session: Session, range_id: int, owner: str, seconds: int) -> bool:
    """Claim a pending slice range (or renew a lease ``owner`` holds)."""
    table = SliceRange.__table__
    now = utcnow()
    free = _free(table.c.lease_owner, table.c.lease_expires, now, owner)
    stmt = (update(table)
            .where(and_(table.c.id == range_id, table.c.state == "pending", free))
            .values(lease_owner=owner, lease_expires=lease_expiry(seconds, now),
                    updated_at=now))
    return session.execute(stmt).rowcount == 1


def require_resync(session: Session, job_id: int, generation: int,
                   why: str) -> tuple[bool, int | None]:
    """The head can no longer follow the source (oplog gap, importCollection):
    ``resync_required`` with ``why`` in the history, and with ``auto_resync``
    the next generation's initial sync at once (same transaction).
    Returns (whether this call moved the job, the new generation or None)."""
    if not transition(session, job_id, JobState.RESYNC_REQUIRED, from_=ACTIVE,
                      generation=generation, message=f"resync required: {why}",
                      values={"error": why}, reason=why):
        return False, None
    add_event(session, job_id, "job.resync_required", why, generation=generation)
    job = session.get(BackupJob, job_id)
    if job is None or not job.auto_resync:
        return True, None
    return True, begin_generation(session, job, f"automatic resync ({why})",
                                  [JobState.RESYNC_REQUIRED])


def fail(session: Session, job_id: int, generation: int, reason: str) -> bool:
    """``failed`` with ``reason`` (if the job is still active at ``generation``)."""
    return transition(session, job_id, JobState.FAILED, from_=ACTIVE, generation=generation,
                      message=f"failed: {reason}", values={"error": reason}, reason=reason)


def lag_seconds(head_ts: int | None, source_ts: int | None) -> float | None:
    """How far the head is behind the source: 0 when it has applied the
    newest entry the last oplog round saw at the source, else the age of
    the head's last applied entry."""
    if head_ts is None:
        return None
    if source_ts is not None and head_ts >= source_ts:
        return 0.0
    return max(0.0, utcnow().timestamp() - optime.unpack(head_ts).time)
