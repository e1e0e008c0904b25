"""A deployment's snapshot policy by name: read it, change it (no Celery).

``show(storage, name)`` and ``update(storage, name, changes)`` return the
policy of the deployment's current job as plain values (the stable keys of
``backupflows snapshots policy --json``), with when the next scheduled
snapshot is due. ``update`` validates the merged policy through
``retention.RetentionPolicy`` (and the store options here) before anything is
saved: a bad value raises ``ConfigError`` and leaves the stored policy as it
was. The first read creates the policy with Ops Manager's defaults
(``service.policy_for``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backupflows.catalog.models import BackupJob, utcnow
from backupflows.catalog.snapshot_models import Snapshot, SnapshotPolicy
from backupflows.errors import ConfigError
from backupflows.storage import retention, schedule, service
from backupflows.storage.service import Storage

STORES = ("blockstore", "filesystem")
# keys a caller may change -> column of SnapshotPolicy
CHANGEABLE = {
    "interval_hours": "interval_hours", "reference_hour": "reference_hour",
    "reference_minute": "reference_minute", "base_days": "base_retention_days",
    "daily_days": "daily_retention_days", "weekly_weeks": "weekly_retention_weeks",
    "monthly_months": "monthly_retention_months", "pit_window_hours": "pit_window_hours",
    "store": "store", "gzip": "fs_gzip", "full_every": "full_every", "enabled": "enabled",
}
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")


def parse_reference_time(text: str) -> tuple[int, int]:
    """``HH:MM`` (UTC) -> (hour, minute); ``ConfigError`` otherwise."""
    m = _HHMM.match(text.strip())
    hour, minute = (int(m.group(1)), int(m.group(2))) if m else (-1, -1)
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ConfigError(f"bad reference time {text!r}: expected HH:MM (UTC), 00:00 to 23:59")
    return hour, minute


def show(storage: Storage, name: str, now: datetime | None = None) -> dict[str, Any]:
    """The policy of deployment ``name`` (created with the defaults if new)."""
    with storage.sessions() as s:
        job = service.job_for(s, name)
        return _describe(s, name, job, service.policy_for(s, job.id), now or utcnow())


def update(storage: Storage, name: str, changes: Mapping[str, Any],
           now: datetime | None = None) -> dict[str, Any]:
    """Apply ``changes`` (keys of ``CHANGEABLE``) after validating the result."""
    unknown = sorted(set(changes) - set(CHANGEABLE))
    if unknown:
        raise ConfigError(f"unknown policy setting(s): {', '.join(unknown)}")
    with storage.sessions() as s:
        job = service.job_for(s, name)
        row = service.policy_for(s, job.id)
        merged = {k: changes.get(k, getattr(row, col)) for k, col in CHANGEABLE.items()}
        validate(merged)
        for key, value in changes.items():
            setattr(row, CHANGEABLE[key], value)
        s.flush()
        return _describe(s, name, job, row, now or utcnow())


def validate(values: Mapping[str, Any]) -> retention.RetentionPolicy:
    """The retention policy of ``values``; ``ConfigError`` naming every problem."""
    if values["store"] not in STORES:
        raise ConfigError(f"bad snapshot policy: store must be one of {', '.join(STORES)}")
    if not 1 <= int(values["full_every"]) <= 1000:
        raise ConfigError("bad snapshot policy: full-every must be 1 to 1000 snapshots")
    return retention.RetentionPolicy(
        values["interval_hours"], values["reference_hour"], values["reference_minute"],
        values["base_days"], values["daily_days"], values["weekly_weeks"],
        values["monthly_months"], values["pit_window_hours"])


def _describe(s: Session, name: str, job: BackupJob, p: SnapshotPolicy,
              now: datetime) -> dict[str, Any]:
    values = {k: getattr(p, col) for k, col in CHANGEABLE.items()}
    out: dict[str, Any] = {"deployment": name, "job": job.id, "job_state": job.state,
                           **values,
                           "reference_time": f"{p.reference_hour:02d}:{p.reference_minute:02d}",
                           "full_delta_percent": p.full_delta_percent,
                           "last_scheduled": None, "next_due": None, "due_now": False}
    last = s.execute(select(Snapshot.created_at).where(
        Snapshot.job_id == job.id, Snapshot.on_demand.is_(False),
        Snapshot.state.in_(("pending", "done", "expired")),
    ).order_by(Snapshot.created_at.desc()).limit(1)).scalar()
    out["last_scheduled"] = _iso(last)
    if p.enabled:
        rp = validate(values)
        due = schedule.is_due(rp, _utc(last), now)
        out["due_now"] = due
        out["next_due"] = _iso(now if due else schedule.next_slot(rp, now))
    return out


def _utc(t: datetime | None) -> datetime | None:
    return t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t


def _iso(t: datetime | None) -> str | None:
    return _utc(t).isoformat() if t is not None else None  # type: ignore[union-attr]
