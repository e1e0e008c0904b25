"""The initial sync's domain steps in this process (no workers): while a
preload holds the head, a slice task goes on with the job's unclaimed ranges
and leaves held ones alone (without a preload at work it slices its own range
only and gives its process back), every range is sliced exactly once (the
head matches the source), and a preload that sees every range sliced loads
the rest and reports ``loaded``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from backupflows.catalog import migrate
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import JobState, Slice, SliceRange
from backupflows.head.store import HeadStore
from backupflows.jobs import headwork, resources, service, sync
from backupflows.jobs.config import job_config
from backupflows.jobs.lifecycle import HEAD, release_job_lease, take_job_lease, take_range_lease
from backupflows.sandbox.sampledata import generate
from backupflows.settings import reset_settings
from backupflows.source.compare import collection_summary


@pytest.fixture
def job(data_dir: Path, monkeypatch: pytest.MonkeyPatch,
        source_client: Callable[..., tuple[Any, Any]]) -> Any:
    monkeypatch.setenv("BACKUPFLOWS_SLICE_BYTES", "64KiB")  # several ranges and slices
    monkeypatch.setenv("BACKUPFLOWS_LEASE_SECONDS", "6")  # a preload waits 2 s at most
    reset_settings()
    job_config.cache_clear()
    resources.reset()
    migrate.upgrade()
    server, client = source_client()
    generate(client, databases=("shop",), collections=("orders", "events"),
             target_bytes=2 * 1024 * 1024, seed=3)
    service.add_deployment("src", server.uri, [], [])
    ref = service.start_job("src", "d1")
    started = sync.start_sync(ref.job_id, ref.generation)
    assert started.status == "planned" and len(started.range_ids) >= 4
    yield ref, started.range_ids, client
    resources.reset()
    job_config.cache_clear()


def _ranges(job_id: int) -> dict[int, tuple[str, int]]:
    with session_scope(readonly=True) as s:
        return {r.id: (r.state, r.slices) for r in
                s.scalars(select(SliceRange).where(SliceRange.job_id == job_id))}


def _preload_holds_the_head(ref: Any, holds: bool = True) -> None:
    with session_scope() as s:
        if holds:
            assert take_job_lease(s, ref.job_id, HEAD, "a-preload", 60,
                                  states=[JobState.INITIAL_SYNC], generation=ref.generation)
        else:
            release_job_lease(s, ref.job_id, HEAD, "a-preload")


def test_a_slice_task_goes_on_with_unclaimed_ranges_and_leaves_held_ones(job: Any) -> None:
    ref, range_ids, client = job
    held = range_ids[2]
    with session_scope() as s:  # another task is slicing this one
        assert take_range_lease(s, held, "someone-else", 60)
    _preload_holds_the_head(ref)
    assert sync.slice_range(range_ids[0], "me", more_seconds=30) == "done"
    states = _ranges(ref.job_id)
    assert {rid for rid, (state, _) in states.items() if state != "done"} == {held}
    assert sync.slice_range(range_ids[1], "me", more_seconds=30) == "skipped"  # taken: done
    assert sync.slice_range(held, "me") == "busy"
    assert _ranges(ref.job_id)[held] == ("pending", 0)
    sync.release_range_lease(held, "someone-else")
    # a task whose own range is done still picks up what is left
    assert sync.slice_range(range_ids[1], "me", more_seconds=30) == "skipped"
    assert all(state == "done" and n > 0 for state, n in _ranges(ref.job_id).values())

    _preload_holds_the_head(ref, False)
    assert headwork.preload_slices(ref.job_id, ref.generation, "d") == "loaded"
    with session_scope(readonly=True) as s:
        assert all(s.scalars(select(Slice.loaded)))
    with HeadStore(resources.head_path(ref.job_id, ref.generation)) as head:
        for ns in ("shop.orders", "shop.events"):  # every document once: count and hash
            c = head.catalog.get(*ns.split("."))
            assert c is not None
            expected = collection_summary(client, ns)
            assert (head.content_hash(c).count, head.content_hash(c).hexdigest()) == (
                expected.count, expected.hexdigest)


@pytest.mark.parametrize("more_seconds", [0.0, 30.0])
def test_a_slice_task_slices_its_own_range_only_without_more_seconds_or_a_preload(
        job: Any, more_seconds: float) -> None:
    ref, range_ids, _ = job
    assert sync.slice_range(range_ids[0], "me", more_seconds=more_seconds) == "done"
    states = _ranges(ref.job_id)
    assert [states[rid][0] for rid in range_ids] == ["done"] + ["pending"] * (len(range_ids) - 1)
    assert headwork.preload_slices(ref.job_id, ref.generation, "d") == "later"  # ranges left


def test_without_preload_a_slice_task_goes_on_at_once(
        job: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ref, range_ids, _ = job
    monkeypatch.setenv("BACKUPFLOWS_PRELOAD", "0")
    job_config.cache_clear()
    assert sync.slice_range(range_ids[-1], "me", more_seconds=30) == "done"
    assert all(state == "done" for state, _ in _ranges(ref.job_id).values())
