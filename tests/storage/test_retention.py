"""Retention (Ops Manager's rules) as a pure function: property tests, and
the schedule's due times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backupflows.errors import ConfigError
from backupflows.storage.retention import RetentionPolicy, SnapshotInfo, day_of, decide
from backupflows.storage.schedule import is_due, last_slot, next_slot

T0 = datetime(2024, 1, 1, tzinfo=UTC)

policies = st.builds(
    RetentionPolicy, interval_hours=st.sampled_from((6, 8, 12, 24)),
    reference_hour=st.integers(0, 23), reference_minute=st.integers(0, 59),
    base_days=st.integers(2, 5), daily_days=st.integers(0, 30), weekly_weeks=st.integers(0, 8),
    monthly_months=st.integers(0, 13), pit_window_hours=st.integers(1, 48))
offsets = st.lists(st.integers(0, 200 * 24 * 60), min_size=0, max_size=60, unique=True)


def _snaps(minutes: list[int], on_demand_every: int = 0) -> list[SnapshotInfo]:
    return [SnapshotInfo(i + 1, T0 + timedelta(minutes=m),
                         on_demand=bool(on_demand_every and i % on_demand_every == 0))
            for i, m in enumerate(sorted(minutes))]


@settings(max_examples=300, deadline=None)
@given(policies, offsets, st.integers(0, 400 * 24 * 60), st.integers(0, 5))
def test_ops_manager_rules(policy: RetentionPolicy, minutes: list[int], now_min: int,
                           od: int) -> None:
    snaps = _snaps(minutes, od)
    now = T0 + timedelta(minutes=now_min)
    past = [s for s in snaps if s.time <= now]
    decisions = {d.id: d for d in decide(past, policy, now)}
    assert set(decisions) == {s.id for s in past}
    if past:  # always one restorable snapshot: the newest
        newest = max(past, key=lambda s: (s.time, s.id))
        assert decisions[newest.id].keep
    for s in past:
        d = decisions[s.id]
        assert d.reasons  # every decision says why
        age = now - s.time
        if age < timedelta(days=policy.base_days):
            assert d.keep, "base retention"
        if not d.keep:
            assert d.expires_at <= now
    # daily: the first scheduled snapshot of every day inside the daily window is kept
    firsts: dict[object, SnapshotInfo] = {}
    for s in sorted(past, key=lambda s: (s.time, s.id)):
        if not s.on_demand:
            firsts.setdefault(day_of(s.time, policy), s)
    for s in firsts.values():
        if policy.daily_days and now - s.time < timedelta(days=policy.daily_days):
            assert decisions[s.id].keep
    # point in time: the newest snapshot at or before the window start is kept
    start = now - timedelta(hours=policy.pit_window_hours)
    base = [s for s in past if s.time <= start]
    if base:
        assert decisions[max(base, key=lambda s: (s.time, s.id)).id].keep
    # idempotent: expiring what it says and deciding again expires nothing more
    kept = [s for s in past if decisions[s.id].keep]
    assert all(d.keep for d in decide(kept, policy, now))


def test_weekly_and_monthly_keep_the_first_of_their_period() -> None:
    policy = RetentionPolicy(interval_hours=24, base_days=2, daily_days=0, weekly_weeks=2,
                             monthly_months=3, pit_window_hours=24)
    snaps = [SnapshotInfo(i, T0 + timedelta(days=i)) for i in range(120)]
    now = T0 + timedelta(days=120)
    kept = {d.id: d.reasons for d in decide(snaps, policy, now) if d.keep}
    assert any("monthly" in r for r in kept[31])  # 2024-02-01
    assert any("weekly" in r for r in kept[112])  # Monday 2024-04-22
    assert 113 not in kept or "weekly" not in " ".join(kept[113])
    assert 10 not in kept  # a mid-January day long past every rule


def test_bad_policies_are_clear_errors() -> None:
    for kw in ({"interval_hours": 5}, {"base_days": 6}, {"daily_days": -1},
               {"pit_window_hours": 200}):
        with pytest.raises(ConfigError, match="bad snapshot policy"):
            RetentionPolicy(**kw)  # type: ignore[arg-type]


def test_schedule_slots_from_the_reference_time() -> None:
    p = RetentionPolicy(interval_hours=8, reference_hour=3, reference_minute=30)
    now = datetime(2024, 5, 2, 1, 0, tzinfo=UTC)
    assert last_slot(p, now) == datetime(2024, 5, 1, 19, 30, tzinfo=UTC)
    assert next_slot(p, now) == datetime(2024, 5, 2, 3, 30, tzinfo=UTC)
    assert is_due(p, None, now)
    assert not is_due(p, datetime(2024, 5, 1, 19, 31, tzinfo=UTC), now)
    assert is_due(p, datetime(2024, 5, 1, 19, 29, tzinfo=UTC), now)
