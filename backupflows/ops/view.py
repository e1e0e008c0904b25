"""Operator's view of a job: last snapshot, next due, PIT window, open alerts,
storage used (extra keys of ``status``), and the merged history that
``backupflows events`` shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backupflows.catalog import optime
from backupflows.catalog.models import BackupJob, Deployment, Event, JobState, OplogSegment, utcnow
from backupflows.catalog.ops_models import Alert
from backupflows.catalog.restore_models import Restore
from backupflows.catalog.snapshot_models import GroomRun, Snapshot, SnapshotPolicy

OPS_KEYS = ("head_time", "last_snapshot", "next_snapshot_due", "pit_window", "open_alerts",
            "storage")


def ops_keys(s: Session, job: BackupJob, now: datetime | None = None) -> dict[str, Any]:
    """The issue-7 keys of one ``status`` row."""
    now = now or utcnow()
    policy = s.get(SnapshotPolicy, job.id)
    head_time = (datetime.fromtimestamp(optime.unpack(job.head_ts).time, now.tzinfo).isoformat()
                 if job.head_ts else None)
    return {"head_time": head_time, "last_snapshot": _last_snapshot(s, job.id, now),
            "next_snapshot_due": _next_due(s, job, policy, now),
            "pit_window": _pit_window(s, job, policy, now),
            "open_alerts": [{"id": a.id, "kind": a.kind, "message": a.message}
                            for a in s.scalars(select(Alert).where(
                                Alert.job_id == job.id, Alert.state == "open")
                                .order_by(Alert.id))],
            "storage": storage_used(s, job.id)}


def _last_snapshot(s: Session, job_id: int, now: datetime) -> dict[str, Any] | None:
    row = s.scalars(select(Snapshot).where(Snapshot.job_id == job_id, Snapshot.state == "done")
                    .order_by(Snapshot.created_at.desc()).limit(1)).first()
    if row is None:
        return None
    at = row.completed_at or row.created_at
    return {"id": row.id, "store": row.store, "optime": optime.to_json(row.optime_ts),
            "at": at.isoformat(), "age_seconds": int((now - at).total_seconds())}


def _next_due(s: Session, job: BackupJob, policy: SnapshotPolicy | None,
              now: datetime) -> str | None:
    from backupflows.storage import schedule
    from backupflows.storage.operations import policy_of

    if job.state != JobState.ROUTINE or (policy is not None and not policy.enabled):
        return None
    p = policy_of(policy if policy is not None else SnapshotPolicy(
        job_id=job.id, interval_hours=6, reference_hour=0, reference_minute=0,
        base_retention_days=2, daily_retention_days=7, weekly_retention_weeks=4,
        monthly_retention_months=13, pit_window_hours=24))
    last = s.scalar(select(Snapshot.created_at).where(
        Snapshot.job_id == job.id, Snapshot.on_demand.is_(False),
        Snapshot.state.in_(("pending", "done", "expired")))
        .order_by(Snapshot.created_at.desc()).limit(1))
    if schedule.is_due(p, last, now):
        return schedule.last_slot(p, now).isoformat()  # due now (the dispatcher takes it)
    return schedule.next_slot(p, now).isoformat()


def _pit_window(s: Session, job: BackupJob, policy: SnapshotPolicy | None,
                now: datetime) -> dict[str, Any] | None:
    if policy is None:  # no snapshot was ever scheduled or taken
        return None
    from backupflows.restore.source import window

    ranges = window(s, job, now.timestamp())
    if not ranges:
        return None
    return {"from": optime.to_json(ranges[0].start), "to": optime.to_json(ranges[-1].end),
            "ranges": [r.to_json() for r in ranges]}


def storage_used(s: Session, job_id: int) -> dict[str, int]:
    """Bytes of the job's oplog store and of its restorable snapshots."""
    seg = s.execute(select(func.count(), func.coalesce(func.sum(OplogSegment.nbytes), 0))
                    .where(OplogSegment.job_id == job_id)).one()
    snap = s.execute(select(func.count(), func.coalesce(func.sum(Snapshot.bytes_stored), 0),
                            func.coalesce(func.sum(Snapshot.bytes_logical), 0))
                     .where(Snapshot.job_id == job_id, Snapshot.state == "done")).one()
    return {"oplog_bytes": int(seg[1]), "oplog_segments": int(seg[0]),
            "snapshots": int(snap[0]), "snapshot_bytes_stored": int(snap[1]),
            "snapshot_bytes_logical": int(snap[2])}


# -- history ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    """One line of history; ``key`` identifies it across polls."""

    at: datetime
    kind: str
    message: str
    deployment: str | None
    job: int | None
    data: dict[str, Any]
    key: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "kind": self.kind, "deployment": self.deployment,
                "job": self.job, "message": self.message, "data": self.data}


def history(s: Session, name: str | None = None, *, since: datetime | None = None,
            limit: int = 50) -> list[Line]:
    """Events, snapshots, restores (and grooms, without ``name``) oldest first: the last
    ``limit`` lines (0: all), or every line at or after ``since``."""
    deps = {d.id: d.name for d in s.scalars(select(Deployment))}
    job_ids: list[int] | None = None
    if name is not None:
        from backupflows.jobs.service import get_deployment

        dep = get_deployment(s, name)
        job_ids = list(s.scalars(select(BackupJob.id).where(BackupJob.deployment_id == dep.id)))
    lines = (_events(s, deps, job_ids, since, limit) + _snapshots(s, deps, job_ids, since, limit)
             + _restores(s, deps, job_ids, since, limit))
    if name is None:
        lines += _grooms(s, since, limit)
    lines.sort(key=lambda ln: (ln.at, ln.key))
    return lines[-limit:] if limit and since is None else lines


def _bound(q: Any, col: Any, since: datetime | None, limit: int) -> Any:
    if since is not None:
        return q.where(col >= since)
    return q.order_by(col.desc()).limit(limit) if limit else q


def _events(s: Session, deps: dict[int, str], job_ids: list[int] | None,
            since: datetime | None, limit: int) -> list[Line]:
    q = select(Event)
    if job_ids is not None:
        q = q.where(Event.job_id.in_(job_ids))
    return [Line(e.created_at, e.kind, e.message, deps.get(e.deployment_id or -1), e.job_id,
                 e.data or {}, f"e{e.id}")
            for e in s.scalars(_bound(q, Event.created_at, since, limit))]


def _job_deps(s: Session) -> dict[int, int]:
    return {j: d for j, d in s.execute(select(BackupJob.id, BackupJob.deployment_id))}


def _snapshots(s: Session, deps: dict[int, str], job_ids: list[int] | None,
               since: datetime | None, limit: int) -> list[Line]:
    at = func.coalesce(Snapshot.completed_at, Snapshot.created_at)
    q = select(Snapshot)
    if job_ids is not None:
        q = q.where(Snapshot.job_id.in_(job_ids))
    jd = _job_deps(s)
    out = []
    for r in s.scalars(_bound(q, at, since, limit)):
        dep = deps.get(jd.get(r.job_id, -1))
        what = f"snapshot {r.id} ({r.kind}, {r.store}{', on demand' if r.on_demand else ''})"
        data = {"snapshot": r.id, "state": r.state, "optime": optime.to_json(r.optime_ts),
                "bytes_stored": r.bytes_stored, "bytes_logical": r.bytes_logical, "docs": r.docs}
        if r.state == "pending":
            line = ("snapshot.running", f"{what} being taken")
        elif r.state == "failed":
            line = ("snapshot.failed", f"{what} failed: {r.error or '?'}")
        else:
            line = ("snapshot.taken", f"{what} taken: {r.docs} documents, {r.bytes_stored} "
                    f"bytes stored" + (f" (now {r.state})" if r.state != "done" else ""))
        when = r.completed_at or r.created_at
        out.append(Line(when, line[0], line[1], dep, r.job_id, data, f"s{r.id}.{line[0]}"))
    return out


def _restores(s: Session, deps: dict[int, str], job_ids: list[int] | None,
              since: datetime | None, limit: int) -> list[Line]:
    q = select(Restore)
    if job_ids is not None:
        q = q.where(Restore.job_id.in_(job_ids))
    out = []
    for r in s.scalars(_bound(q, Restore.created_at, since, limit)):
        what = f"restore {r.id} ({r.destination_kind})"
        data = {"restore": r.id, "state": r.state, "snapshot": r.snapshot_id,
                "at": optime.to_json(r.point_ts)}
        out.append(Line(r.created_at, "restore.requested", f"{what} requested",
                        r.deployment_name, r.job_id, data, f"r{r.id}.requested"))
        if r.finished_at is not None and r.state in ("done", "failed"):
            message = (f"{what} done: {r.docs} documents" if r.state == "done"
                       else f"{what} failed: {r.error or '?'}")
            out.append(Line(r.finished_at, f"restore.{r.state}", message, r.deployment_name,
                            r.job_id, data, f"r{r.id}.{r.state}"))
    return [ln for ln in out if since is None or ln.at >= since]


def _grooms(s: Session, since: datetime | None, limit: int) -> list[Line]:
    q = select(GroomRun).where(GroomRun.finished_at.is_not(None))
    out = []
    for g in s.scalars(_bound(q, GroomRun.finished_at, since, limit)):
        message = (f"groom {g.id}: {g.blocks_deleted} blocks, {g.bytes_freed} bytes freed"
                   if g.state == "done" else f"groom {g.id} failed: {g.error or '?'}")
        assert g.finished_at is not None
        out.append(Line(g.finished_at, f"groom.{g.state}", message, None, None,
                        {"groom": g.id, "bytes_freed": g.bytes_freed}, f"g{g.id}.{g.state}"))
    return out
