"""``backupflows status``: one row per deployment's current job.

Keys of ``status --json`` (stable): ``deployment``, ``job``, ``state``,
``generation``, ``daemon_id``, ``t0``, ``head_ts`` and ``oplog_ts`` (each
``{"t": seconds, "i": increment}`` or null), ``lag_seconds``, ``error``,
``progress`` (initial sync: ``ranges_done``, ``ranges_total``, ``slices``,
``slices_loaded``, ``docs``, ``bytes``), ``updated_at``; and (issue 7)
``head_time`` (ISO time of the head's optime), ``last_snapshot`` (``{id,
store, optime, at, age_seconds}`` or null), ``next_snapshot_due`` (ISO time,
null when no schedule applies), ``pit_window`` (``{from, to, ranges}``: the
restorable points of ``backupflows restore --at``, or null), ``open_alerts``
(``[{id, kind, message}]``), ``storage`` (``{oplog_bytes, oplog_segments,
snapshots, snapshot_bytes_stored, snapshot_bytes_logical}``).

``history`` merges the job's events with what the snapshot, restore and
groom tables record (``backupflows events``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from backupflows.catalog import optime
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, Deployment, Event, JobState, Slice, SliceRange
from backupflows.jobs.lifecycle import ACTIVE, lag_seconds
from backupflows.jobs.service import current_job, get_deployment
from backupflows.ops.view import OPS_KEYS, ops_keys


def status_rows(name: str | None = None) -> list[dict[str, Any]]:
    """Rows for one deployment (``name``) or all of them, by name."""
    with session_scope(readonly=True) as s:
        if name is not None:
            deps = [get_deployment(s, name)]
        else:
            deps = list(s.scalars(select(Deployment).order_by(Deployment.name)))
        return [_row(s, dep, current_job(s, dep.id)) for dep in deps]


def _row(s: Session, dep: Deployment, job: BackupJob | None) -> dict[str, Any]:
    if job is None:
        return {"deployment": dep.name, "job": None, "state": None, "generation": None,
                "daemon_id": None, "t0": None, "head_ts": None, "oplog_ts": None,
                "lag_seconds": None, "error": None, "progress": None, "updated_at": None,
                **dict.fromkeys(OPS_KEYS)}
    lag = job.lag_seconds
    if job.state == JobState.ROUTINE:
        lag = lag_seconds(job.head_ts, job.source_ts)
    elif job.state not in ACTIVE:
        lag = None
    return {"deployment": dep.name, "job": job.id, "state": job.state,
            "generation": job.generation, "daemon_id": job.daemon_id,
            "t0": optime.to_json(job.t0_ts), "head_ts": optime.to_json(job.head_ts),
            "oplog_ts": optime.to_json(job.oplog_ts),
            "lag_seconds": round(lag, 1) if lag is not None else None,
            "error": job.error, "progress": _progress(s, job),
            "updated_at": job.updated_at.isoformat(), **ops_keys(s, job)}


def _progress(s: Session, job: BackupJob) -> dict[str, Any] | None:
    if job.state not in (JobState.INITIAL_SYNC, JobState.BUILDING, JobState.VALIDATING):
        return None
    where = (SliceRange.job_id == job.id, SliceRange.generation == job.generation)
    ranges = s.execute(select(
        func.count(), func.sum(case((SliceRange.state == "done", 1), else_=0)),
        func.coalesce(func.sum(SliceRange.docs), 0),
        func.coalesce(func.sum(SliceRange.nbytes), 0)).where(*where)).one()
    slices = s.execute(select(func.count(), func.sum(case((Slice.loaded, 1), else_=0)))
                       .join(SliceRange, Slice.range_id == SliceRange.id).where(*where)).one()
    return {"ranges_total": int(ranges[0] or 0), "ranges_done": int(ranges[1] or 0),
            "docs": int(ranges[2] or 0), "bytes": int(ranges[3] or 0),
            "slices": int(slices[0] or 0), "slices_loaded": int(slices[1] or 0)}


def job_events(job_id: int, kinds: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The job's history, oldest first (``kinds`` narrows it)."""
    with session_scope(readonly=True) as s:
        q = select(Event).where(Event.job_id == job_id).order_by(Event.id)
        if kinds:
            q = q.where(Event.kind.in_(kinds))
        return [{"id": e.id, "kind": e.kind, "message": e.message, "data": e.data,
                 "created_at": e.created_at.isoformat()} for e in s.scalars(q)]
