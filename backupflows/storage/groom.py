"""Grooms: reclaiming blocks and manifests that no kept snapshot needs.

Split in two, restic-style: ``plan`` (what would be deleted and why, live
and total bytes; read-only) and ``run`` (the same plan, executed with the
generation protocol of ``blockindex``: bump ``gen``, plan among blocks not
touched since, claim each dead block with a conditional UPDATE, delete its
object, delete its row). A groom never holds a lock while it deletes:
snapshots and restores go on; the claim decides each race.

Triggered like Ops Manager's: when live/total bytes falls under
``min_live_ratio`` (default 45%) and the dead bytes exceed
``min_dead_bytes`` (default 64 MiB), both set by
``BACKUPFLOWS_GROOM_MIN_LIVE_RATIO``/``_MIN_DEAD_BYTES`` (see
``operations.groom_if_due``); or on demand (``backupflows groom plan|run``).

``run`` also finishes what killed runs left: pending snapshots whose lease
lapsed become ``failed`` (their blocks dead), blocks a dead groom left
``deleting`` are deleted, block objects no row describes (a snapshot killed
between upload and index) are claimed through the index and deleted once
older than ``orphan_grace`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from backupflows.catalog.models import utcnow
from backupflows.catalog.snapshot_models import Block, GroomRun, Snapshot
from backupflows.storage import blockindex
from backupflows.storage.blockstore import object_name
from backupflows.storage.service import Storage

MIN_LIVE_RATIO = 0.45
MIN_DEAD_BYTES = 64 << 20
LEASE_SECONDS = 600.0
ORPHAN_GRACE = 3600.0
Hook = Callable[[str], None]


@dataclass
class GroomPlan:
    """What a groom would reclaim."""

    dead: list[tuple[str, int]] = field(default_factory=list)  # (block id, stored bytes)
    total_bytes: int = 0
    total_blocks: int = 0
    manifests: list[tuple[int, str]] = field(default_factory=list)  # (snapshot, object)

    @property
    def dead_bytes(self) -> int:
        return sum(size for _, size in self.dead)

    @property
    def live_bytes(self) -> int:
        return self.total_bytes - self.dead_bytes

    @property
    def live_ratio(self) -> float:
        return 1.0 if self.total_bytes == 0 else self.live_bytes / self.total_bytes

    def due(self, min_live_ratio: float = MIN_LIVE_RATIO,
            min_dead_bytes: int = MIN_DEAD_BYTES) -> bool:
        """Ops Manager's trigger: little live data and enough dead bytes."""
        return self.live_ratio < min_live_ratio and self.dead_bytes > min_dead_bytes

    def to_json(self) -> dict[str, object]:
        return {"dead_blocks": len(self.dead), "dead_bytes": self.dead_bytes,
                "live_bytes": self.live_bytes, "total_bytes": self.total_bytes,
                "total_blocks": self.total_blocks, "live_ratio": round(self.live_ratio, 4),
                "manifests": [{"snapshot": s, "object": o} for s, o in self.manifests],
                "blocks": [b for b, _ in self.dead]}


def dead_blocks(candidates: Iterable[tuple[str, int]], referenced: set[str]
                ) -> list[tuple[str, int]]:
    """The pure core of a plan: candidates no kept snapshot references."""
    return [(b, size) for b, size in candidates if b not in referenced]


def plan(storage: Storage, *, gen: int | None = None, now: datetime | None = None) -> GroomPlan:
    """The plan of a groom at generation ``gen`` (default: one that starts now)."""
    now = now or utcnow()
    with storage.reading() as s:
        if gen is None:
            gen = blockindex.read_gen(s) + 1
        candidates = blockindex.candidate_blocks(s, gen)
        referenced = blockindex.referenced_blocks(s, now)
        total, count = s.execute(select(func.coalesce(func.sum(Block.stored_size), 0),
                                        func.count()).where(Block.state == "live")).one()
        manifests = s.execute(select(Snapshot.id, Snapshot.manifest).where(
            Snapshot.manifest.is_not(None), ~blockindex.kept_condition(now),
            Snapshot.state.in_(("expired", "failed")))).all()
    return GroomPlan(dead_blocks(candidates, referenced), int(total), int(count),
                     [(int(i), str(o)) for i, o in manifests])


@dataclass
class GroomResult:
    groom_id: int
    plan: GroomPlan
    blocks_deleted: int = 0
    bytes_freed: int = 0
    manifests_deleted: int = 0
    abandoned: list[int] = field(default_factory=list)
    orphans_deleted: int = 0


def run(storage: Storage, *, on_demand: bool = False, hook: Hook | None = None,
        orphan_grace: float = ORPHAN_GRACE, lease_seconds: float = LEASE_SECONDS) -> GroomResult:
    """Execute a groom (see the module docstring); ``hook(point)`` is called at
    each step (tests use it to interleave and to crash)."""
    step = hook or (lambda _point: None)
    gid, gen, abandoned = _start(storage, on_demand, lease_seconds)
    step("started")
    p = plan(storage, gen=gen)
    step("planned")
    result = GroomResult(gid, p, abandoned=abandoned)
    try:
        _finish_stale(storage, step)
        renew_at = time.monotonic() + lease_seconds / 4
        for bid, size in p.dead:
            if _reclaim(storage, bid, gen, gid, step):
                result.blocks_deleted += 1
                result.bytes_freed += size
            if time.monotonic() > renew_at:
                _renew(storage, gid, lease_seconds)
                renew_at = time.monotonic() + lease_seconds / 4
        result.manifests_deleted = _drop_manifests(storage, p.manifests, step)
        result.orphans_deleted = _orphans(storage, gid, orphan_grace, step)
        with storage.sessions() as s:
            blockindex.drop_unneeded_references(s, utcnow())
    except BaseException as exc:
        _end(storage, result, "failed", f"{type(exc).__name__}: {exc}")
        raise
    _end(storage, result, "done", None)
    step("done")
    return result


def _start(storage: Storage, on_demand: bool, lease_seconds: float) -> tuple[int, int, list[int]]:
    with storage.sessions() as s:
        abandoned = blockindex.abandon_lapsed_snapshots(s, utcnow())
        gen = blockindex.next_gen(s)
        gid = s.execute(insert(GroomRun).values(
            gen=gen, state="running", on_demand=on_demand, started_at=utcnow(),
            lease_until=blockindex.lease(lease_seconds), blocks_deleted=0, bytes_freed=0,
            manifests_deleted=0).returning(GroomRun.id)).scalar_one()
    return int(gid), gen, abandoned


def _renew(storage: Storage, gid: int, lease_seconds: float) -> None:
    with storage.sessions() as s:
        s.execute(update(GroomRun).where(GroomRun.id == gid)
                  .values(lease_until=blockindex.lease(lease_seconds)))


def _end(storage: Storage, r: GroomResult, state: str, error: str | None) -> None:
    with storage.sessions() as s:
        s.execute(update(GroomRun).where(GroomRun.id == r.groom_id).values(
            state=state, finished_at=utcnow(), lease_until=None, error=error,
            blocks_deleted=r.blocks_deleted, bytes_freed=r.bytes_freed,
            manifests_deleted=r.manifests_deleted))


def _reclaim(storage: Storage, bid: str, gen: int, gid: int, step: Hook) -> bool:
    with storage.sessions() as s:
        if not blockindex.claim(s, bid, gen, gid):
            step(f"missed {bid}")
            return False
    step(f"claimed {bid}")
    storage.backend.delete(object_name(bid))
    step(f"deleted {bid}")
    with storage.sessions() as s:
        blockindex.forget_block(s, bid)
    step(f"forgot {bid}")
    return True


def _finish_stale(storage: Storage, step: Hook) -> None:
    with storage.reading() as s:
        stale = blockindex.stale_deleting(s, utcnow())
    for bid in stale:
        storage.backend.delete(object_name(bid))
        with storage.sessions() as s:
            blockindex.forget_block(s, bid)
        step(f"finished {bid}")


def _drop_manifests(storage: Storage, manifests: list[tuple[int, str]], step: Hook) -> int:
    n = 0
    for sid, name in manifests:
        with storage.sessions() as s:
            row = s.get(Snapshot, sid)
            now = utcnow()
            if row is None or row.state not in ("expired", "failed") or (
                    row.pinned_until is not None and row.pinned_until > now):
                continue
            s.execute(update(Snapshot).where(Snapshot.id == sid).values(manifest=None))
        storage.backend.delete(name)
        step(f"manifest {sid}")
        n += 1
    return n


def _orphans(storage: Storage, gid: int, grace: float, step: Hook) -> int:
    """Block objects without an index row, older than ``grace``: claim each
    through the index (a ``deleting`` row), delete, forget."""
    cutoff = time.time() - grace
    n = 0
    for info in storage.backend.list("blocks/"):
        bid = info.name.rsplit("/", 1)[-1]
        if info.mtime > cutoff:
            continue
        with storage.sessions() as s:
            if s.get(Block, bid) is not None:
                continue
            try:
                with s.begin_nested():
                    s.execute(insert(Block).values(
                        id=bid, size=0, stored_size=info.size, state="deleting",
                        touched_gen=0, last_touched=utcnow(), groom_id=gid))
            except SAIntegrityError:
                continue
        storage.backend.delete(info.name)
        with storage.sessions() as s:
            blockindex.forget_block(s, bid)
        step(f"orphan {bid}")
        n += 1
    return n


def last_runs(storage: Storage, limit: int = 10) -> list[GroomRun]:
    with storage.reading() as s:
        return list(s.execute(select(GroomRun).order_by(GroomRun.id.desc()).limit(limit))
                    .scalars())


def since(minutes: float) -> datetime:
    return utcnow() - timedelta(minutes=minutes)
