"""What the snapshot tasks and commands do, in plain functions (no Celery).

- ``take_for_job``: a snapshot of a job's head into the store its policy
  names (blockstore by default, or the filesystem store);
- ``due_jobs``: routine jobs whose schedule says a snapshot is due;
- ``expire``: apply each job's retention policy (pure ``retention.decide``)
  and expire what it does not keep;
- ``groom_if_due``: Ops Manager's groom trigger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select, update

from backupflows.catalog.models import BackupJob, Deployment, utcnow
from backupflows.catalog.snapshot_models import Snapshot, SnapshotPolicy
from backupflows.errors import NotFound
from backupflows.head.store import HeadStore
from backupflows.storage import fsstore, groom, retention, schedule, service
from backupflows.storage import snapshot as snap
from backupflows.storage.service import Storage


def head_path(job: BackupJob) -> Path:
    from backupflows.jobs.resources import head_path as job_head_path

    return job_head_path(job.id, job.generation)


def fs_root() -> Path:
    from backupflows.settings import get_settings

    return get_settings().data_dir / "snapshots"


def policy_of(p: SnapshotPolicy) -> retention.RetentionPolicy:
    return retention.RetentionPolicy(
        p.interval_hours, p.reference_hour, p.reference_minute, p.base_retention_days,
        p.daily_retention_days, p.weekly_retention_weeks, p.monthly_retention_months,
        p.pit_window_hours)


def take_for_job(storage: Storage, job_id: int, *, on_demand: bool = False,
                 head: Path | None = None, progress: snap.Progress | None = None) -> int:
    """Snapshot the head of ``job_id``; the snapshot id once done."""
    with storage.sessions() as s:
        job = s.get(BackupJob, job_id)
        if job is None:
            raise NotFound(f"no backup job {job_id}")
        policy = service.policy_for(s, job_id)
        deployment = s.get(Deployment, job.deployment_id)
        generation, store = job.generation, policy.store
        opts = snap.TakeOptions(full_every=policy.full_every,
                                full_delta_percent=policy.full_delta_percent)
        gzip, name = policy.fs_gzip, deployment.name if deployment else str(job_id)
        path = head or head_path(job)
    if not Path(path).exists():
        raise NotFound(f"job {job_id} has no head at {path} on this daemon")
    with HeadStore(path) as h:
        if store == "filesystem":
            return take_fs(storage, job_id, h, name, generation=generation,
                           on_demand=on_demand, gzip=gzip)
        return service.take(storage, job_id, h, head_generation=generation,
                            on_demand=on_demand, opts=opts, progress=progress)


def take_fs(storage: Storage, job_id: int, head: HeadStore, deployment: str, *,
            generation: int = 0, on_demand: bool = False, gzip: bool = False,
            root: Path | None = None) -> int:
    """A snapshot into the filesystem store (a mongodump directory)."""
    root = root or fs_root()
    with storage.sessions() as s:
        prev = s.execute(select(Snapshot.id).where(
            Snapshot.job_id == job_id, Snapshot.store == "filesystem", Snapshot.state == "done",
        ).order_by(Snapshot.id.desc()).limit(1)).scalar()
        service._no_running_snapshot(s, job_id)
        row = Snapshot(job_id=job_id, store="filesystem", kind="full", state="pending",
                       on_demand=on_demand, head_generation=generation, parent_id=prev,
                       lease_until=service.blockindex.lease(service.LEASE_SECONDS))
        s.add(row)
        s.flush()
        sid = row.id
    try:
        with head.snapshot() as view:
            out = fsstore.write_snapshot(view, root, deployment, sid, previous=prev, gzip=gzip)
    except BaseException as exc:
        service.fail(storage, sid, f"{type(exc).__name__}: {exc}")
        raise
    info = out.info
    docs = sum(c.get("count", 0) for c in info["collections"].values())
    with storage.sessions() as s:
        s.execute(update(Snapshot).where(Snapshot.id == sid, Snapshot.state == "pending").values(
            state="done", kind="full", optime_ts=info["optime_ts"], optime_t=info["optime_t"],
            head_mark=info["mark"], wall_time=utcnow(), completed_at=utcnow(),
            bytes_stored=out.bytes_written, bytes_logical=out.bytes_written, docs=docs,
            manifest=str(out.path.relative_to(root)), lease_until=None))
    return sid


@dataclass
class DueJob:
    job_id: int
    daemon_id: str | None


def due_jobs(storage: Storage, now: datetime | None = None) -> list[DueJob]:
    """Routine jobs with an enabled policy whose next scheduled snapshot is due."""
    now = now or utcnow()
    out = []
    with storage.sessions() as s:
        jobs = s.execute(select(BackupJob).where(BackupJob.state == "routine")).scalars().all()
        for job in jobs:
            p = service.policy_for(s, job.id)
            if not p.enabled:
                continue
            last = s.execute(select(Snapshot.created_at).where(
                Snapshot.job_id == job.id, Snapshot.on_demand.is_(False),
                Snapshot.state.in_(("pending", "done", "expired")),
            ).order_by(Snapshot.created_at.desc()).limit(1)).scalar()
            if schedule.is_due(policy_of(p), last, now):
                out.append(DueJob(job.id, job.daemon_id))
    return out


def expire(storage: Storage, now: datetime | None = None,
           job_id: int | None = None) -> dict[int, list[retention.Decision]]:
    """Apply retention to every job (or one); the decisions per job."""
    now = now or utcnow()
    result: dict[int, list[retention.Decision]] = {}
    with storage.sessions() as s:
        q = select(Snapshot.job_id).where(Snapshot.state == "done").distinct()
        job_ids = [job_id] if job_id is not None else list(s.execute(q).scalars())
        for jid in job_ids:
            policy = policy_of(service.policy_for(s, jid))
            rows = service.list_snapshots(s, jid)
            infos = [retention.SnapshotInfo(r.id, r.wall_time or r.created_at, r.on_demand)
                     for r in rows]
            decisions = retention.decide(infos, policy, now)
            for d in decisions:
                values: dict[str, object] = {"expires_at": d.expires_at}
                if not d.keep:
                    values.update(state="expired", error="; ".join(d.reasons))
                s.execute(update(Snapshot).where(Snapshot.id == d.id, Snapshot.state == "done")
                          .values(**values))
            result[jid] = decisions
    return result


def remove_expired_fs(storage: Storage) -> int:
    """Delete the directories of expired filesystem-store snapshots."""
    n = 0
    with storage.sessions() as s:
        rows = s.execute(select(Snapshot, Deployment.name).join(
            BackupJob, BackupJob.id == Snapshot.job_id).join(Deployment).where(
            Snapshot.store == "filesystem", Snapshot.state.in_(("expired", "failed")),
            Snapshot.manifest.is_not(None))).all()
        for row, name in rows:
            fsstore.remove_snapshot(fs_root(), name, row.id)
            row.manifest = None
            n += 1
    return n


def groom_trigger() -> tuple[float, int]:
    """The configured groom trigger: (minimum live/total ratio, minimum dead
    bytes), from ``BACKUPFLOWS_GROOM_MIN_LIVE_RATIO`` and
    ``BACKUPFLOWS_GROOM_MIN_DEAD_BYTES`` (defaults: Ops Manager's 45%, 64 MiB)."""
    from backupflows.settings import get_settings

    s = get_settings()
    return s.groom_min_live_ratio, s.groom_min_dead_bytes


def groom_if_due(storage: Storage, min_live_ratio: float | None = None,
                 min_dead_bytes: int | None = None) -> groom.GroomResult | None:
    """Run a groom when Ops Manager's trigger says so (thresholds not given
    come from the settings: ``groom_trigger``); None otherwise."""
    ratio, dead = groom_trigger()
    remove_expired_fs(storage)
    p = groom.plan(storage)
    if not p.due(ratio if min_live_ratio is None else min_live_ratio,
                 dead if min_dead_bytes is None else min_dead_bytes):
        return None
    return groom.run(storage)
