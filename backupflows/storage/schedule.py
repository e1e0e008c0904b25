"""When scheduled snapshots are due (pure).

Snapshots are taken every ``interval_hours`` (6, 8, 12 or 24, so each day
has the same slots) from the policy's UTC reference time: the slots are
``reference + k * interval``. A snapshot is due when the latest slot at or
before ``now`` is later than the last scheduled snapshot (one catch-up
snapshot after downtime, never a burst).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backupflows.storage.retention import RetentionPolicy


def last_slot(policy: RetentionPolicy, now: datetime) -> datetime:
    """The latest slot at or before ``now``."""
    now = now.astimezone(UTC)
    step = timedelta(hours=policy.interval_hours)
    day = datetime(now.year, now.month, now.day, tzinfo=UTC) + policy.reference
    if day > now:
        day -= timedelta(days=1)
    n = (now - day) // step
    return day + n * step


def next_slot(policy: RetentionPolicy, now: datetime) -> datetime:
    """The first slot strictly after ``now``."""
    return last_slot(policy, now) + timedelta(hours=policy.interval_hours)


def is_due(policy: RetentionPolicy, last_scheduled: datetime | None, now: datetime) -> bool:
    """True when a scheduled snapshot should be taken now."""
    if last_scheduled is None:
        return True
    return last_scheduled < last_slot(policy, now)
