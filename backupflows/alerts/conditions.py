"""The alert conditions, read from the catalog (no side effects).

Each ``*_findings`` function returns what is wrong *now*; ``find_all``
collects them. A finding's ``key`` (``kind:subject``) identifies the
condition: the alert stays open while a finding with that key is found,
and closes when none is. Thresholds come from ``AlertConfig``.

- ``oplog_behind`` (job active): the oplog store has not caught up with the
  source for longer than ``oplog_behind`` seconds: the last successful oplog
  round is that old, or the newest stored entry is that old while the last
  round did not reach the source's newest entry;
- ``head_behind`` (validating/routine): the head's applied optime is more
  than ``head_behind`` seconds behind the newest stored oplog entry;
- ``late_snapshot`` (routine, schedule enabled): the newest done snapshot (or,
  without one, the moment the job turned routine) is older than
  ``snapshot_late_factor`` x the snapshot interval;
- ``resync_required`` / ``job_failed``: the job is in that state;
- ``integrity_failure``: an integrity check raised an ``alert`` event for a
  snapshot that is still restorable (clears when it is deleted or expired, or
  when a later check passes it: an ``integrity_ok`` event);
- ``daemon_down``: a daemon holding the head of a job that is not terminated
  has not reported for ``daemon_down`` seconds;
- ``low_head_disk_space``: a daemon's last report gives its heads directory
  less than ``disk_free_bytes`` or ``disk_free_percent`` free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backupflows.alerts.config import AlertConfig
from backupflows.catalog import optime
from backupflows.catalog.models import BackupJob, Deployment, Event, JobState
from backupflows.catalog.ops_models import DaemonHeartbeat
from backupflows.catalog.snapshot_models import Snapshot, SnapshotPolicy

ACTIVE = (JobState.INITIAL_SYNC, JobState.BUILDING, JobState.VALIDATING, JobState.ROUTINE)


@dataclass
class Finding:
    """One condition that holds now."""

    kind: str
    subject: str
    message: str
    job_id: int | None = None
    deployment_id: int | None = None
    daemon_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.subject}"


@dataclass
class JobView:
    job: BackupJob
    deployment: str


def current_jobs(s: Session) -> list[JobView]:
    """The newest job of every deployment, terminated ones left out."""
    newest = select(func.max(BackupJob.id)).group_by(BackupJob.deployment_id)
    rows = s.execute(select(BackupJob, Deployment.name).join(Deployment)
                     .where(BackupJob.id.in_(newest)).order_by(BackupJob.id)).all()
    return [JobView(job, name) for job, name in rows if job.state != JobState.TERMINATED]


def _job_finding(v: JobView, kind: str, message: str, **data: Any) -> Finding:
    return Finding(kind, f"job:{v.job.id}", f"{v.deployment}: {message}", v.job.id,
                   v.job.deployment_id, v.job.daemon_id, data)


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else (now - then).total_seconds()


def _ts_age(now: datetime, packed: int | None) -> float | None:
    return None if packed is None else now.timestamp() - optime.unpack(packed).time


def oplog_behind_findings(s: Session, jobs: list[JobView], now: datetime,
                          cfg: AlertConfig) -> list[Finding]:
    out = []
    for v in jobs:
        job = v.job
        if job.state not in ACTIVE:
            continue
        since_round = _age(now, job.last_round_at or job.updated_at) or 0.0
        behind = since_round
        if job.source_ts is None and job.oplog_ts is not None:  # last round not caught up
            behind = max(behind, _ts_age(now, job.oplog_ts) or 0.0)
        if behind > cfg.oplog_behind:
            out.append(_job_finding(
                v, "oplog_behind", f"oplog store {int(behind)} s behind the source "
                f"(threshold {cfg.oplog_behind} s)", behind_seconds=int(behind),
                oplog_ts=optime.to_json(job.oplog_ts)))
    return out


def head_behind_findings(s: Session, jobs: list[JobView], now: datetime,
                         cfg: AlertConfig) -> list[Finding]:
    out = []
    for v in jobs:
        job = v.job
        if job.state not in (JobState.VALIDATING, JobState.ROUTINE):
            continue
        if job.head_ts is None or job.oplog_ts is None:
            continue
        behind = optime.unpack(job.oplog_ts).time - optime.unpack(job.head_ts).time
        if behind > cfg.head_behind:
            out.append(_job_finding(
                v, "head_behind", f"head {behind} s behind the stored oplog "
                f"(threshold {cfg.head_behind} s)", behind_seconds=behind,
                head_ts=optime.to_json(job.head_ts), oplog_ts=optime.to_json(job.oplog_ts)))
    return out


def late_snapshot_findings(s: Session, jobs: list[JobView], now: datetime,
                           cfg: AlertConfig) -> list[Finding]:
    out = []
    for v in jobs:
        job = v.job
        if job.state != JobState.ROUTINE:
            continue
        policy = s.get(SnapshotPolicy, job.id)
        interval_hours = policy.interval_hours if policy is not None else 6
        if policy is not None and not policy.enabled:
            continue
        last = s.execute(select(Snapshot.id, func.coalesce(Snapshot.completed_at,
                                                           Snapshot.created_at))
                         .where(Snapshot.job_id == job.id, Snapshot.state == "done")
                         .order_by(Snapshot.created_at.desc()).limit(1)).first()
        since = last[1] if last else (job.synced_at or job.created_at)
        age = _age(now, since) or 0.0
        limit = cfg.snapshot_late_factor * interval_hours * 3600
        if age > limit:
            what = f"last snapshot ({last[0]})" if last else "no snapshot since routine;"
            out.append(_job_finding(
                v, "late_snapshot", f"{what} {age / 3600:.1f} h old, more than "
                f"{cfg.snapshot_late_factor:g} x the {interval_hours} h interval",
                age_seconds=int(age), snapshot=last[0] if last else None,
                interval_hours=interval_hours))
    return out


def state_findings(s: Session, jobs: list[JobView], now: datetime,
                   cfg: AlertConfig) -> list[Finding]:
    out = []
    for v in jobs:
        if v.job.state == JobState.RESYNC_REQUIRED:
            out.append(_job_finding(v, "resync_required", "resync required: "
                                    f"{v.job.error or 'the head cannot follow the source'}",
                                    error=v.job.error))
        elif v.job.state == JobState.FAILED:
            out.append(_job_finding(v, "job_failed", f"job failed: {v.job.error or '?'}",
                                    error=v.job.error))
    return out


def integrity_findings(s: Session, jobs: list[JobView], now: datetime,
                       cfg: AlertConfig) -> list[Finding]:
    names = {v.job.id: v.deployment for v in jobs}
    rows = s.execute(select(Event, Snapshot).join(Snapshot, Snapshot.job_id == Event.job_id)
                     .where(Event.kind.in_(("alert", "integrity_ok")), Snapshot.state == "done")
                     .order_by(Event.id)).all()
    found: dict[int, Finding] = {}
    for event, snap in rows:
        if (event.data or {}).get("snapshot") != snap.id:
            continue
        if event.kind == "integrity_ok":  # a later check passed it
            found.pop(snap.id, None)
            continue
        name = names.get(snap.job_id, f"job {snap.job_id}")
        found[snap.id] = Finding(
            "integrity_failure", f"snapshot:{snap.id}", f"{name}: {event.message}",
            snap.job_id, event.deployment_id, None,
            {"snapshot": snap.id, "problems": (event.data or {}).get("problems", [])[:10],
             "checked_at": event.created_at.isoformat()})
    return list(found.values())


def _holders(jobs: list[JobView]) -> dict[str, list[JobView]]:
    out: dict[str, list[JobView]] = {}
    for v in jobs:
        if v.job.daemon_id:
            out.setdefault(v.job.daemon_id, []).append(v)
    return out


def daemon_findings(s: Session, jobs: list[JobView], now: datetime,
                    cfg: AlertConfig) -> list[Finding]:
    beats = {b.daemon_id: b for b in s.scalars(select(DaemonHeartbeat))}
    out = []
    for daemon, held in sorted(_holders(jobs).items()):
        beat = beats.get(daemon)
        since = beat.seen_at if beat else min(v.job.created_at for v in held)
        age = _age(now, since) or 0.0
        if age > cfg.daemon_down:
            names = sorted(v.deployment for v in held)
            last = f"last report {int(age)} s ago" if beat else "never reported"
            out.append(Finding("daemon_down", f"daemon:{daemon}",
                               f"daemon {daemon} is down ({last}); it holds the heads of "
                               f"{', '.join(names)}", None, None, daemon,
                               {"seconds_since_report": int(age), "deployments": names}))
    for daemon, beat in sorted(beats.items()):
        if beat.disk_free is None or not beat.disk_total:
            continue
        if (_age(now, beat.seen_at) or 0.0) > cfg.daemon_down:
            continue  # its figures are stale: daemon_down says it
        percent = 100.0 * beat.disk_free / beat.disk_total
        if beat.disk_free < cfg.disk_free_bytes or percent < cfg.disk_free_percent:
            out.append(Finding("low_head_disk_space", f"daemon:{daemon}",
                               f"daemon {daemon}: heads disk {beat.heads_dir} has "
                               f"{beat.disk_free / 1024**3:.2f} GiB free ({percent:.1f}%)",
                               None, None, daemon,
                               {"free_bytes": beat.disk_free, "total_bytes": beat.disk_total,
                                "free_percent": round(percent, 2)}))
    return out


CONDITIONS = (oplog_behind_findings, head_behind_findings, late_snapshot_findings,
              state_findings, integrity_findings, daemon_findings)


def find_all(s: Session, now: datetime, cfg: AlertConfig) -> list[Finding]:
    """Every condition that holds now, one finding per key."""
    jobs = current_jobs(s)
    out: dict[str, Finding] = {}
    for condition in CONDITIONS:
        for f in condition(s, jobs, now, cfg):
            out.setdefault(f.key, f)
    return list(out.values())
