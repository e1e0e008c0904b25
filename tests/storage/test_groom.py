# ruff: noqa: F811 - pytest fixtures imported from snapshot_helpers
"""Grooms: the pure plan, its execution, and the races with snapshots driven
step by step through the groom's hook (no sleeping to order events)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from backupflows.head.store import HeadStore
from backupflows.storage import groom, service
from backupflows.storage import snapshot as snap
from tests.oplog.oplog_gen import generate
from tests.storage.snapshot_helpers import (  # noqa: F401 - fixtures
    assert_store_intact,
    catalog,
    fill,
    job,
    restored,
    small_opts,
    state_of,
    storage,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def head(tmp_path: Path) -> HeadStore:
    h = HeadStore(tmp_path / "h.db")
    fill(h, generate(seed=13, n=2000))
    return h


def test_dead_blocks_is_candidates_minus_referenced() -> None:
    cands = [("a", 1), ("b", 2), ("c", 3)]
    assert groom.dead_blocks(cands, {"b"}) == [("a", 1), ("c", 3)]
    assert groom.GroomPlan([("a", 10)], total_bytes=100).live_ratio == 0.9
    assert groom.GroomPlan([("a", 60)], total_bytes=100).due(0.45, 50)
    assert not groom.GroomPlan([("a", 60)], total_bytes=100).due(0.45, 100)


def test_plan_then_run(storage: service.Storage, job: int, head: HeadStore) -> None:
    first = service.take(storage, job, head, opts=small_opts())
    assert groom.plan(storage).dead == []
    fill(head, generate(seed=14, n=500))
    service.take(storage, job, head, opts=small_opts(force="full"))
    with storage.sessions() as s:
        service.delete_snapshot(s, first)
    p = groom.plan(storage)
    assert p.dead and p.manifests == [(first, f"manifests/{job}/{first:012d}")]
    r = groom.run(storage)
    assert r.blocks_deleted == len(p.dead) and r.bytes_freed == p.dead_bytes
    assert groom.plan(storage).dead == []
    assert_store_intact(storage)


def test_snapshot_reusing_a_planned_block_wins(storage: service.Storage, job: int,
                                               head: HeadStore) -> None:
    """The groom planned a block as dead; before it claims it, a snapshot
    touches it (dedup): the claim misses and the block stays."""
    first = service.take(storage, job, head, opts=small_opts())
    with storage.sessions() as s:
        service.delete_snapshot(s, first)
    taken: list[int] = []

    def hook(point: str) -> None:
        if point == "planned":
            taken.append(service.take(storage, job, head, opts=small_opts(force="full")))

    r = groom.run(storage, hook=hook)
    assert r.plan.dead and r.blocks_deleted == 0  # every claim missed
    assert restored(storage, taken[0]) == state_of(head)
    assert_store_intact(storage)


def test_snapshot_needing_a_claimed_block_reuploads_it(storage: service.Storage, job: int,
                                                       head: HeadStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The groom claimed a block (deleting); a snapshot needing the same block
    waits until the groom removed it, then uploads it again."""
    first = service.take(storage, job, head, opts=small_opts())
    with storage.sessions() as s:
        service.delete_snapshot(s, first)
    waiting = threading.Event()
    result: list[int] = []
    original = storage.blocks.__class__._await_deletion

    def spy(self, bid, deadline):  # type: ignore[no-untyped-def]
        waiting.set()
        return original(self, bid, deadline)

    def take() -> None:
        with HeadStore(head.path) as h:
            result.append(service.take(storage, job, h, opts=small_opts(force="full")))

    thread: list[threading.Thread] = []

    def hook(point: str) -> None:
        if point.startswith("claimed") and not thread:
            thread.append(threading.Thread(target=take))
            thread[0].start()
            assert waiting.wait(30)  # the snapshot met the deleting block

    monkeypatch.setattr(storage.blocks.__class__, "_await_deletion", spy)
    groom.run(storage, hook=hook)
    thread[0].join(60)
    assert restored(storage, result[0]) == state_of(head)
    assert_store_intact(storage)


def test_pending_snapshot_keeps_its_new_blocks(storage: service.Storage, job: int,
                                               head: HeadStore) -> None:
    """A snapshot's blocks stored before a groom starts are referenced by the
    pending snapshot, so the groom leaves them; the snapshot then finishes."""
    begun = service.begin(storage, job)
    with head.snapshot() as view:
        m, stats = snap.take(view, storage.blocks, snapshot_id=begun.snapshot_id, job_id=job,
                             opts=small_opts())
    r = groom.run(storage)
    assert r.plan.dead == [] and r.blocks_deleted == 0
    service.finish(storage, m, stats)
    assert restored(storage, begun.snapshot_id) == state_of(head)
    assert_store_intact(storage)


def test_pinned_expired_snapshot_keeps_its_blocks(storage: service.Storage, job: int,
                                                  head: HeadStore) -> None:
    """A restore pins its snapshot: expiring it meanwhile does not free its blocks."""
    sid = service.take(storage, job, head, opts=small_opts())
    assert service.pin(storage, sid, 60)
    fill(head, generate(seed=15, n=300))
    service.take(storage, job, head, opts=small_opts(force="full"))
    with storage.sessions() as s:
        service.delete_snapshot(s, sid)
    assert groom.plan(storage).dead == []
    m = service.open_snapshot(storage, sid)  # still readable by the restore
    assert m.snapshot == sid
