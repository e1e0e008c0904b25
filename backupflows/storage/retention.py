"""Snapshot retention, Ops Manager's rules, as a pure function.

``decide(snapshots, policy, now)`` returns, for every restorable snapshot,
whether to keep or expire it and every reason that applies:

- **base**: every snapshot is kept ``base_days`` (2-5) days;
- **daily / weekly / monthly**: the first scheduled snapshot of each day, week
  and month is kept ``daily_days`` days, ``weekly_weeks`` weeks,
  ``monthly_months`` months (0 turns a rule off). Days start at the
  policy's UTC reference time; weeks are ISO weeks (Monday) and months
  calendar months of that day;
- **on demand**: kept like a daily snapshot (Ops Manager's default), at least
  the base retention, or until its explicit ``expires_at``;
- **point-in-time window**: the newest snapshot at or before ``now - window``
  is kept, so every point of the window can be restored (snapshot + oplog);
- **newest restorable**: the newest snapshot is always kept, so there is
  always one snapshot to restore.

``expires_at`` of a decision is when its time-based rules end (what
``snapshots list`` shows); the window and newest rules keep a snapshot past
it until newer snapshots take over.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from backupflows.errors import ConfigError

INTERVALS = (6, 8, 12, 24)


@dataclass(frozen=True)
class RetentionPolicy:
    interval_hours: int = 6
    reference_hour: int = 0
    reference_minute: int = 0
    base_days: int = 2
    daily_days: int = 7
    weekly_weeks: int = 4
    monthly_months: int = 13
    pit_window_hours: int = 24

    def __post_init__(self) -> None:
        problems = []
        if self.interval_hours not in INTERVALS:
            problems.append(f"interval must be one of {INTERVALS} hours")
        if not 0 <= self.reference_hour < 24 or not 0 <= self.reference_minute < 60:
            problems.append("reference time must be HH:MM (UTC)")
        if not 2 <= self.base_days <= 5:
            problems.append("base retention must be 2 to 5 days")
        for name, value, top in (("daily", self.daily_days, 365),
                                 ("weekly", self.weekly_weeks, 52),
                                 ("monthly", self.monthly_months, 36)):
            if not 0 <= value <= top:
                problems.append(f"{name} retention must be 0 (off) to {top}")
        if not 1 <= self.pit_window_hours <= self.base_days * 24:
            problems.append("point-in-time window must be 1 hour to the base retention")
        if problems:
            raise ConfigError("bad snapshot policy: " + "; ".join(problems))

    @property
    def reference(self) -> timedelta:
        return timedelta(hours=self.reference_hour, minutes=self.reference_minute)


@dataclass(frozen=True)
class SnapshotInfo:
    id: int
    time: datetime  # when the snapshot's state was read (UTC)
    on_demand: bool = False
    expires_at: datetime | None = None  # explicit retention of an on-demand snapshot


@dataclass(frozen=True)
class Decision:
    id: int
    keep: bool
    reasons: tuple[str, ...]
    expires_at: datetime


def day_of(t: datetime, policy: RetentionPolicy) -> date:
    """The snapshot day of ``t``: days start at the reference time (UTC)."""
    return (t.astimezone(UTC) - policy.reference).date()


def add_months(t: datetime, months: int) -> datetime:
    y, m = divmod(t.month - 1 + months, 12)
    year, month = t.year + y, m + 1
    return t.replace(year=year, month=month, day=min(t.day, calendar.monthrange(year, month)[1]))


def _firsts(snaps: list[SnapshotInfo], policy: RetentionPolicy) -> dict[str, set[int]]:
    seen: dict[str, dict[object, int]] = {"daily": {}, "weekly": {}, "monthly": {}}
    for s in snaps:  # oldest first
        if s.on_demand:
            continue
        d = day_of(s.time, policy)
        for rule, bucket in (("daily", d), ("weekly", d.isocalendar()[:2]),
                             ("monthly", (d.year, d.month))):
            seen[rule].setdefault(bucket, s.id)
    return {rule: set(b.values()) for rule, b in seen.items()}


def _time_rules(s: SnapshotInfo, policy: RetentionPolicy, firsts: dict[str, set[int]]
                ) -> list[tuple[str, datetime]]:
    rules = [(f"base retention ({policy.base_days} days)",
              s.time + timedelta(days=policy.base_days))]
    if s.on_demand:
        days = max(policy.daily_days, policy.base_days)
        until = s.expires_at or s.time + timedelta(days=days)
        rules.append(("on-demand snapshot", until))
    if policy.daily_days and s.id in firsts["daily"]:
        rules.append((f"daily ({policy.daily_days} days)",
                      s.time + timedelta(days=policy.daily_days)))
    if policy.weekly_weeks and s.id in firsts["weekly"]:
        rules.append((f"weekly ({policy.weekly_weeks} weeks)",
                      s.time + timedelta(weeks=policy.weekly_weeks)))
    if policy.monthly_months and s.id in firsts["monthly"]:
        rules.append((f"monthly ({policy.monthly_months} months)",
                      add_months(s.time, policy.monthly_months)))
    return rules


def decide(snapshots: Iterable[SnapshotInfo], policy: RetentionPolicy,
           now: datetime) -> list[Decision]:
    """Keep or expire each restorable snapshot, with its reasons (oldest first)."""
    snaps = sorted(snapshots, key=lambda s: (s.time, s.id))
    firsts = _firsts(snaps, policy)
    window_start = now - timedelta(hours=policy.pit_window_hours)
    pit_base = max((s for s in snaps if s.time <= window_start),
                   key=lambda s: (s.time, s.id), default=None)
    newest = snaps[-1] if snaps else None
    out = []
    for s in snaps:
        rules = _time_rules(s, policy, firsts)
        reasons = [name for name, until in rules if now < until]
        if pit_base is not None and s.id == pit_base.id:
            reasons.append(f"point-in-time window ({policy.pit_window_hours} h)")
        if newest is not None and s.id == newest.id:
            reasons.append("newest restorable snapshot")
        expires = max(until for _, until in rules)
        out.append(Decision(s.id, bool(reasons), tuple(reasons) or (
            f"expired: every rule ended by {expires:%Y-%m-%d %H:%M} UTC",), expires))
    return out
