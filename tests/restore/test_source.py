"""Restore sources: points (--at), the restorable window of a job (snapshots +
chained oplog segments, within the point-in-time window), gaps, refusals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select, update

from backupflows.catalog.models import OplogSegment
from backupflows.catalog.snapshot_models import SnapshotPolicy
from backupflows.errors import NotFound, RestoreError
from backupflows.restore import source
from tests.restore.world import World

MAX = 0xFFFFFFFF


def test_parse_point() -> None:
    assert source.parse_point("1700000000:5") == (1700000000 << 32) | 5
    assert source.parse_point("1700000000") == (1700000000 << 32) | MAX
    when = datetime(2024, 11, 28, 10, 15, tzinfo=UTC)
    secs = int(when.timestamp())
    assert source.parse_point("2024-11-28T10:15:00Z") == (secs << 32) | MAX
    assert source.parse_point("2024-11-28T10:15:00.75+00:00") == (secs << 32) | MAX
    assert source.parse_point("2024-11-28T11:15:00+01:00") == (secs << 32) | MAX
    assert source.parse_point("2024-11-28T10:15:00") == (secs << 32) | MAX  # naive = UTC
    for bad in ("yesterday", "12:ab", "", "1700000000:99999999999"):
        with pytest.raises(RestoreError, match="--at"):
            source.parse_point(bad)


def _window(w: World) -> list[source.Range]:
    with w.storage.reading() as s:
        return source.window(s, source.deployment_job(s, w.name)[1])


def test_window_runs_from_the_oldest_snapshot_to_the_last_stored_entry(history: World) -> None:
    ranges = _window(history)
    first = min(history.snapshots.values())
    assert [(r.start, r.end) for r in ranges] == [(first, history.position)]
    with history.storage.reading() as s:
        src = source.resolve_point(s, history.name, history.position)
        mid = sorted(history.snapshots.values())[1]
        assert src.snapshot_ts == mid  # the nearest snapshot at or before the point
        assert src.segments and all(g.last > mid for g in src.segments)
        at_snap = source.resolve_point(s, history.name, first)
        assert at_snap.snapshot_ts == first and not at_snap.rolls_forward


@pytest.mark.parametrize("where", ["before", "after"])
def test_points_outside_the_window_are_refused_with_the_ranges(history: World,
                                                               where: str) -> None:
    first = min(history.snapshots.values())
    point = first - 1 if where == "before" else history.position + 1
    with history.storage.reading() as s, pytest.raises(RestoreError) as err:
        source.resolve_point(s, history.name, point)
    text = str(err.value)
    assert "not restorable" in text and "restorable: " in text
    assert f"{first >> 32}:{first & MAX}" in text
    assert f"{history.position >> 32}:{history.position & MAX}" in text


def test_a_gap_in_the_segment_chain_splits_the_window(history: World) -> None:
    snaps = sorted(history.snapshots.values())
    with history.storage.sessions() as s:
        rows = s.execute(select(OplogSegment).where(OplogSegment.after_ts > snaps[0],
                                                    OplogSegment.last_ts < snaps[1])
                         .order_by(OplogSegment.after_ts)).scalars().all()
        hole = rows[len(rows) // 2]
        gap = (hole.after_ts, hole.last_ts)
        s.execute(delete(OplogSegment).where(OplogSegment.id == hole.id))
    ranges = _window(history)
    assert [(r.start, r.end) for r in ranges] == [(snaps[0], gap[0]),
                                                  (snaps[1], history.position)]
    with history.storage.reading() as s:
        with pytest.raises(RestoreError, match="not restorable") as err:
            source.resolve_point(s, history.name, gap[0] + 1)  # inside the hole
        assert str(ranges[0]) in str(err.value) and str(ranges[1]) in str(err.value)
        assert source.resolve_point(s, history.name, gap[0]).snapshot_ts == snaps[0]
        with pytest.raises(RestoreError):
            source.resolve_point(s, history.name, gap[1])  # after the hole, before snapshot 2


def test_the_point_in_time_window_clips_old_points(history: World) -> None:
    second = min(history.snapshots.values()) >> 32  # the generated oplog is one second long
    with history.storage.sessions() as s:
        s.execute(update(SnapshotPolicy).values(pit_window_hours=1))
    with history.storage.reading() as s:
        job = source.deployment_job(s, history.name)[1]
        whole = [(r.start, r.end) for r in source.window(s, job, now=second + 3600)]
        assert whole == [(min(history.snapshots.values()), history.position)]
        assert source.window(s, job, now=second + 3601) == []
        with pytest.raises(RestoreError, match="nothing is restorable"):
            source.resolve_point(s, history.name, history.position, now=second + 3601)
        assert source.resolve_snapshot(s, history.name, 1).snapshot_id == 1  # by id: yes
    r = source.Range(1, 10 << 32, 20 << 32)
    assert source._clip(r, 15 << 32) == source.Range(1, 15 << 32, 20 << 32)
    assert source._clip(r, 21 << 32) is None and source._clip(r, 5 << 32) is r


def test_snapshot_of_another_deployment_or_unknown_is_refused(history: World) -> None:
    from tests.storage.snapshot_helpers import add_job

    add_job(history.url, "other")
    with history.storage.reading() as s:
        with pytest.raises(NotFound, match="has no snapshot 1"):
            source.resolve_snapshot(s, "other", 1)
        with pytest.raises(NotFound, match="no snapshot 99"):
            source.resolve_snapshot(s, history.name, 99)
        with pytest.raises(NotFound, match="no deployment named"):
            source.resolve_snapshot(s, "nope", 1)
        with pytest.raises(RestoreError, match="nothing is restorable"):
            source.resolve_point(s, "other", history.position)
