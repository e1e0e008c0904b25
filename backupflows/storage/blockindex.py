"""The block index in the catalog, and the protocol that lets grooms run while
snapshots are taken and restores read, without a global lock.

Tables (``backupflows.catalog.snapshot_models``):

- ``blocks(id, size, stored_size, state live|deleting, touched_gen, ...)``;
  invariant: a ``live`` row's object is completely stored.
- ``snapshot_blocks(snapshot, block)``: blocks of the layers a snapshot wrote;
  ``snapshot_deps(snapshot, dep)``: snapshots whose layers its manifest uses
  (itself included). The blocks a snapshot needs are the own blocks of its deps.
- ``storage_state.gen``: the groom generation.

A snapshot is *kept* while it is ``done``, or ``pending`` with an unexpired
lease, or pinned (``pinned_until`` in the future: a restore reading it).

Snapshot side (``touch`` / ``insert``; each one short catalog transaction
that first reads ``gen`` with a shared row lock, ``SELECT ... FOR SHARE``):

1. create the snapshot row (``pending``, lease) and its deps on the parent's
   chain in one transaction, checking the parent is still ``done`` (row lock);
2. for each block it writes: ``UPDATE blocks SET touched_gen=gen WHERE
   id=? AND state='live'`` plus the ``snapshot_blocks`` row, in one
   transaction. No row: upload the object, then insert the row (``live``)
   and the reference. Row ``deleting``: a groom is removing it; wait until
   the row is gone (or the groom's lease has lapsed: finish its deletion),
   then upload and insert;
3. finish: in ONE transaction touch every block its manifest lists (all
   must be ``live``), then ``state='done' WHERE state='pending'``. A miss
   fails the snapshot (it never becomes visible).

Groom side: ``gen = gen + 1`` (the exclusive row lock waits for every touch
transaction in flight, so each touch either committed before — and its
references are visible to the plan — or records the new ``gen``); plan:
dead = live blocks with ``touched_gen < gen`` referenced by no kept
snapshot; then per block ``UPDATE ... SET state='deleting' WHERE id=? AND
state='live' AND touched_gen < gen`` (the UPDATE is the claim), delete the
object, delete the row.

Why it is safe: a block a snapshot needs is either referenced by a kept
snapshot when the plan reads (so it is not dead), or touched after the
groom's ``gen`` (so the claim misses), or claimed before the snapshot's touch
(so the touch misses and the snapshot re-uploads it or fails). A killed
snapshot leaves a pending row whose lease lapses: its blocks become dead
blocks for a later groom. A killed groom leaves ``deleting`` rows: the next
groom (or a snapshot needing the block) finishes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.orm import Session

from backupflows.catalog.models import utcnow
from backupflows.catalog.snapshot_models import (
    Block,
    GroomRun,
    Snapshot,
    SnapshotBlock,
    SnapshotDep,
    StorageState,
)

LIVE, DELETING = "live", "deleting"
_CHUNK = 500


def read_gen(session: Session) -> int:
    """The groom generation, with a shared lock until the transaction ends."""
    row = session.execute(select(StorageState.gen).where(StorageState.id == 1)
                          .with_for_update(read=True)).scalar_one_or_none()
    if row is None:
        try:
            with session.begin_nested():
                session.execute(insert(StorageState).values(id=1, gen=0))
        except SAIntegrityError:
            pass
        return read_gen(session)
    return int(row)


def next_gen(session: Session) -> int:
    """Increment the groom generation (exclusive row lock); the new value."""
    read_gen(session)  # make sure the row exists
    session.execute(update(StorageState).where(StorageState.id == 1)
                    .values(gen=StorageState.gen + 1))
    return int(session.execute(select(StorageState.gen).where(StorageState.id == 1))
               .scalar_one())


def kept_condition(now: datetime) -> object:
    """SQL condition on ``Snapshot``: the snapshot keeps its blocks (never
    NULL, so that its negation is exact)."""
    return or_(Snapshot.state == "done",
               and_(Snapshot.state == "pending", Snapshot.lease_until.is_not(None),
                    Snapshot.lease_until > now),
               and_(Snapshot.pinned_until.is_not(None), Snapshot.pinned_until > now))


# -- snapshot side ---------------------------------------------------------

def touch(session: Session, snapshot_id: int, block_id: str) -> str | None:
    """Touch a known block for ``snapshot_id`` and record the reference.
    Returns ``live`` (done), ``deleting`` (being groomed) or None (unknown)."""
    gen = read_gen(session)
    hit = session.execute(update(Block).where(Block.id == block_id, Block.state == LIVE)
                          .values(touched_gen=gen, last_touched=utcnow())).rowcount
    if hit:
        _reference(session, snapshot_id, [block_id])
        return LIVE
    state = session.execute(select(Block.state).where(Block.id == block_id)).scalar()
    return state


def touch_many(session: Session, snapshot_id: int, block_ids: list[str]) -> dict[str, str]:
    """``touch`` for many blocks in one transaction: the state of each known
    block after the touch (``live`` ones are touched and referenced)."""
    gen = read_gen(session)
    ids = list(dict.fromkeys(block_ids))
    states: dict[str, str] = {}
    for i in range(0, len(ids), _CHUNK):
        part = ids[i:i + _CHUNK]
        session.execute(update(Block).where(Block.id.in_(part), Block.state == LIVE)
                        .values(touched_gen=gen, last_touched=utcnow()))
        for bid, state in session.execute(select(Block.id, Block.state)
                                          .where(Block.id.in_(part))):
            states[bid] = state
    _reference(session, snapshot_id, [b for b, st in states.items() if st == LIVE])
    return states


def stored_sizes(session: Session, block_ids: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(0, len(block_ids), _CHUNK):
        part = block_ids[i:i + _CHUNK]
        out.update((b, int(n)) for b, n in session.execute(
            select(Block.id, Block.stored_size).where(Block.id.in_(part))))
    return out


def insert_many(session: Session, snapshot_id: int,
                blocks: list[tuple[str, int, int]]) -> set[str]:
    """Index blocks whose objects were just stored; the ids inserted (an id
    another writer indexed meanwhile is left out: touch it instead)."""
    gen = read_gen(session)
    now = utcnow()
    have = set(session.execute(select(Block.id).where(
        Block.id.in_([b[0] for b in blocks]))).scalars())
    rows = [{"id": b, "size": size, "stored_size": stored, "state": LIVE,
             "touched_gen": gen, "last_touched": now} for b, size, stored in blocks
            if b not in have]
    won: set[str] = set()
    if rows:
        try:
            with session.begin_nested():
                session.execute(insert(Block), rows)
            won = {r["id"] for r in rows}
        except SAIntegrityError:  # a concurrent writer: insert one by one
            for r in rows:
                try:
                    with session.begin_nested():
                        session.execute(insert(Block).values(**r))
                    won.add(r["id"])
                except SAIntegrityError:
                    pass
    _reference(session, snapshot_id, won)
    return won


def insert_block(session: Session, snapshot_id: int, block_id: str, size: int,
                 stored_size: int) -> bool:
    """Record a block whose object was just stored; False if a row exists
    already (another writer won: call ``touch`` again)."""
    gen = read_gen(session)
    try:
        with session.begin_nested():
            session.execute(insert(Block).values(
                id=block_id, size=size, stored_size=stored_size, state=LIVE,
                touched_gen=gen, last_touched=utcnow()))
    except SAIntegrityError:
        return False
    _reference(session, snapshot_id, [block_id])
    return True


def _reference(session: Session, snapshot_id: int, block_ids: Iterable[str]) -> None:
    have = set(session.execute(select(SnapshotBlock.block_id).where(
        SnapshotBlock.snapshot_id == snapshot_id,
        SnapshotBlock.block_id.in_(list(block_ids)))).scalars())
    rows = [{"snapshot_id": snapshot_id, "block_id": b} for b in block_ids if b not in have]
    if rows:
        session.execute(insert(SnapshotBlock), rows)


def touch_all(session: Session, block_ids: list[str]) -> list[str]:
    """Touch every block; returns the ids that are not live (missing or deleting)."""
    gen = read_gen(session)
    now = utcnow()
    missing: list[str] = []
    for i in range(0, len(block_ids), _CHUNK):
        part = block_ids[i:i + _CHUNK]
        session.execute(update(Block).where(Block.id.in_(part), Block.state == LIVE)
                        .values(touched_gen=gen, last_touched=now))
        live = set(session.execute(select(Block.id).where(
            Block.id.in_(part), Block.state == LIVE)).scalars())
        missing.extend(b for b in part if b not in live)
    return missing


def deleting_owner_lapsed(session: Session, block_id: str, now: datetime) -> bool:
    """True when ``block_id`` is ``deleting`` by a groom that is no longer running
    (finished, failed, or its lease lapsed): its deletion may be finished by anyone."""
    row = session.execute(select(Block.groom_id).where(
        Block.id == block_id, Block.state == DELETING)).first()
    if row is None:
        return False
    if row[0] is None:
        return True
    run = session.get(GroomRun, row[0])
    return run is None or run.state != "running" or (
        run.lease_until is not None and run.lease_until < now)


def forget_block(session: Session, block_id: str) -> None:
    """Remove a ``deleting`` row (its object is deleted)."""
    session.execute(delete(Block).where(Block.id == block_id, Block.state == DELETING))


# -- groom side ------------------------------------------------------------

def referenced_blocks(session: Session, now: datetime) -> set[str]:
    """Every block some kept snapshot needs."""
    kept = select(Snapshot.id).where(kept_condition(now))
    deps = select(SnapshotDep.dep_id).where(SnapshotDep.snapshot_id.in_(kept))
    own_kept = select(Snapshot.id).where(Snapshot.id.in_(kept))
    q = select(SnapshotBlock.block_id).where(or_(
        SnapshotBlock.snapshot_id.in_(deps), SnapshotBlock.snapshot_id.in_(own_kept)))
    return set(session.execute(q.distinct()).scalars())


def candidate_blocks(session: Session, gen: int) -> list[tuple[str, int]]:
    """(id, stored size) of live blocks not touched since generation ``gen``."""
    rows = session.execute(select(Block.id, Block.stored_size).where(
        Block.state == LIVE, Block.touched_gen < gen).order_by(Block.id))
    return [(r[0], int(r[1])) for r in rows]


def claim(session: Session, block_id: str, gen: int, groom_id: int) -> bool:
    """The groom's claim of one dead block (the UPDATE is the claim)."""
    return session.execute(update(Block).where(
        Block.id == block_id, Block.state == LIVE, Block.touched_gen < gen,
    ).values(state=DELETING, groom_id=groom_id)).rowcount == 1


def stale_deleting(session: Session, now: datetime) -> list[str]:
    """Blocks left ``deleting`` by grooms that are no longer running."""
    running = select(GroomRun.id).where(GroomRun.state == "running",
                                        or_(GroomRun.lease_until.is_(None),
                                            GroomRun.lease_until >= now))
    rows = session.execute(select(Block.id).where(
        Block.state == DELETING,
        or_(Block.groom_id.is_(None), Block.groom_id.not_in(running))))
    return list(rows.scalars())


def abandon_lapsed_snapshots(session: Session, now: datetime) -> list[int]:
    """Mark pending snapshots whose lease lapsed as failed; their ids."""
    ids = list(session.execute(select(Snapshot.id).where(
        Snapshot.state == "pending", Snapshot.lease_until < now)).scalars())
    for sid in ids:
        session.execute(update(Snapshot).where(
            Snapshot.id == sid, Snapshot.state == "pending", Snapshot.lease_until < now,
        ).values(state="failed", error="abandoned: its lease lapsed (killed or stalled)"))
    return ids


def drop_unneeded_references(session: Session, now: datetime) -> int:
    """Forget the references of snapshots no kept snapshot depends on."""
    kept = select(Snapshot.id).where(kept_condition(now))
    needed = select(SnapshotDep.dep_id).where(SnapshotDep.snapshot_id.in_(kept))
    gone = select(Snapshot.id).where(~kept_condition(now), Snapshot.id.not_in(needed))
    n = session.execute(delete(SnapshotBlock).where(
        SnapshotBlock.snapshot_id.in_(gone))).rowcount
    session.execute(delete(SnapshotDep).where(SnapshotDep.snapshot_id.in_(
        select(Snapshot.id).where(~kept_condition(now)))))
    return int(n or 0)


def lease(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def is_referenced(session: Session, block_id: str, now: datetime) -> bool:
    kept = select(Snapshot.id).where(kept_condition(now))
    deps = select(SnapshotDep.dep_id).where(SnapshotDep.snapshot_id.in_(kept))
    return bool(session.execute(select(exists().where(
        SnapshotBlock.block_id == block_id,
        or_(SnapshotBlock.snapshot_id.in_(deps), SnapshotBlock.snapshot_id.in_(kept)),
    ))).scalar())
