"""Agent work: oplog ingestion rounds into the oplog store, and reading it back.

``oplog_round`` runs one bounded round for a job under the job's oplog lease
(one round at a time per job): it reads from the last stored position
(``job.oplog_ts``), writes one segment object, and records the segment and
the new position in ONE catalog transaction, conditional on the lease and on
the position it started from, so a repeated or concurrent round can never
record the same entries twice or leave a hole.

A round ends after ``OPLOG_ROUND_SECONDS``, at its size limit, or as soon
as a read waits ``OPLOG_AWAIT_MS`` without a new entry (caught up: the
newest entry it stored was the source's newest, so the lag is zero when the
head has applied it).

A round that finds the entries after the last stored one gone (the capped
oplog rolled over) marks the job ``resync_required`` with the reason and,
when the job has ``auto_resync``, starts the next generation's initial sync
in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backupflows.catalog import optime
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, JobState, OplogSegment, utcnow
from backupflows.errors import SourceError
from backupflows.jobs import resources
from backupflows.jobs.config import job_config
from backupflows.jobs.lifecycle import (
    ACTIVE,
    OPLOG,
    release_job_lease,
    require_resync,
    take_job_lease,
)
from backupflows.oplog.segments import decode_segment, encode_round
from backupflows.redact import redact_text
from backupflows.source.oplog_reader import Round, read_round


@dataclass
class RoundResult:
    """``stored`` (entries recorded), ``idle`` (nothing new), ``gap``,
    ``skipped`` (job not active) or ``busy`` (another round holds the lease).
    ``more``: the round stopped at its size limit, run the next one now."""

    status: str
    entries: int = 0
    nbytes: int = 0
    more: bool = False
    new_generation: int | None = None
    daemon_id: str = ""
    routine: bool = False


def oplog_round(job_id: int, owner: str, token: str | None = None) -> RoundResult:
    """One ingestion round for ``job_id`` (see the module docstring)."""
    with session_scope(readonly=True) as s:
        job = s.get(BackupJob, job_id)
        if job is None or job.state not in ACTIVE or job.oplog_ts is None:
            return RoundResult("skipped")
        generation, after, uri = job.generation, job.oplog_ts, job.deployment.uri
        daemon_id, routine = job.daemon_id or "", job.state == JobState.ROUTINE
    cfg = job_config()
    with session_scope() as s:
        if not take_job_lease(s, job_id, OPLOG, owner, cfg.oplog_lease_seconds, states=ACTIVE,
                              generation=generation, token=token, take_reserved=True):
            return RoundResult("busy")
    try:
        rnd = read_round(resources.source_client(uri), optime.unpack(after),
                         max_seconds=cfg.oplog_round_seconds, max_bytes=cfg.oplog_round_bytes,
                         until_caught_up=True, await_ms=cfg.oplog_await_ms)
    except SourceError as exc:
        _round_failed(job_id, owner, exc)
        raise
    if rnd.gap:
        return _gap(job_id, generation, rnd.gap_reason, daemon_id)
    result = _store(job_id, generation, owner, after, rnd)
    result.daemon_id, result.routine = daemon_id, routine
    return result


def _store(job_id: int, generation: int, owner: str, after: int, rnd: Round) -> RoundResult:
    last = optime.pack(rnd.last_ts)
    caught_up = rnd.stop == "caught_up"
    name = None
    if last > after:
        name = resources.segment_name(job_id, generation, after, last)
        resources.object_store().put(name, encode_round(rnd, job=job_id, generation=generation))
    with session_scope() as s:
        if name is not None:
            s.add(OplogSegment(job_id=job_id, generation=generation, after_ts=after,
                               last_ts=last, count=rnd.count, nbytes=rnd.nbytes,
                               object_name=name))
        table = BackupJob.__table__
        hit = s.execute(update(table).where(
            table.c.id == job_id, table.c.oplog_lease_owner == owner,
            table.c.generation == generation, table.c.oplog_ts == after,
        ).values(oplog_ts=last, source_ts=last if caught_up else None,
                 last_round_at=utcnow(), error=None, oplog_lease_owner=None,
                 oplog_lease_expires=None, updated_at=utcnow())).rowcount == 1
        if not hit:
            s.rollback()
            return RoundResult("busy")
    status = "stored" if rnd.count else "idle"
    return RoundResult(status, rnd.count, rnd.nbytes, more=rnd.stop in ("bytes", "entries"))


def _round_failed(job_id: int, owner: str, exc: SourceError) -> None:
    """Keep the error on the job (status shows it) and free the lease: the
    next dispatched round tries again."""
    with session_scope() as s:
        release_job_lease(s, job_id, OPLOG, owner)
        s.execute(update(BackupJob.__table__).where(BackupJob.__table__.c.id == job_id)
                  .values(error=f"oplog round: {redact_text(str(exc))}"))


def _gap(job_id: int, generation: int, reason: str, daemon_id: str) -> RoundResult:
    with session_scope() as s:
        moved, new = require_resync(s, job_id, generation, f"oplog gap: {reason}")
    return RoundResult("gap" if moved else "skipped", new_generation=new, daemon_id=daemon_id)


# -- reading the store back --------------------------------------------------------------

def segments_after(s: Session, job_id: int, generation: int, position: int,
                   upto: int | None = None) -> list[tuple[int, int, str]]:
    """``(after_ts, last_ts, object name)`` of the stored segments holding
    entries after ``position`` (up to ``upto``), in oplog order."""
    q = (select(OplogSegment.after_ts, OplogSegment.last_ts, OplogSegment.object_name)
         .where(OplogSegment.job_id == job_id, OplogSegment.generation == generation,
                OplogSegment.last_ts > position)
         .order_by(OplogSegment.after_ts))
    if upto is not None:
        q = q.where(OplogSegment.last_ts <= upto)
    return [(a, b, c) for a, b, c in s.execute(q)]


def segment_entries(name: str) -> Iterator[bytes]:
    """The raw entries of one stored segment."""
    return decode_segment(resources.object_store().get(name))
