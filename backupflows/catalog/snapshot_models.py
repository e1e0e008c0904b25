"""Catalog models of snapshot storage: snapshots, their block references,
the block index, snapshot policies (schedule + retention) and groom runs.

Revision ``migrations/versions/0003_snapshots.py`` creates these tables.
The groom/snapshot protocol that uses ``blocks``, ``snapshot_blocks``,
``snapshot_deps`` and ``storage_state`` is described in
``backupflows/storage/blockindex.py``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    false,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from backupflows.catalog import optime
from backupflows.catalog.models import Base, utcnow


class SnapshotState(StrEnum):
    PENDING = "pending"  # being taken: invisible to restores and listings
    DONE = "done"        # complete: every block and the manifest are stored
    EXPIRED = "expired"  # expired by retention or deleted: its blocks may be groomed
    FAILED = "failed"    # abandoned (killed, lease lapsed) or failed: never visible


class SnapshotKind(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"
    SYNTHETIC = "synthetic"


STORES = ("blockstore", "filesystem")
SNAPSHOT_STATES = tuple(s.value for s in SnapshotState)
SNAPSHOT_KINDS = tuple(k.value for k in SnapshotKind)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class Snapshot(Base):
    """One snapshot of a job's head at one optime."""

    __tablename__ = "snapshots"
    __table_args__ = (
        CheckConstraint(_in("state", SNAPSHOT_STATES), name="state"),
        CheckConstraint(_in("kind", SNAPSHOT_KINDS), name="kind"),
        CheckConstraint(_in("store", STORES), name="store"),
        Index("ix_snapshots_job_id_state", "job_id", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("backup_jobs.id", ondelete="CASCADE"))
    store: Mapped[str] = mapped_column(String(16), default="blockstore")
    kind: Mapped[str] = mapped_column(String(16), default=SnapshotKind.FULL.value)
    state: Mapped[str] = mapped_column(String(16), default=SnapshotState.PENDING.value)
    on_demand: Mapped[bool] = mapped_column(default=False, server_default=false())
    optime_ts: Mapped[int | None] = mapped_column(BigInteger)
    optime_t: Mapped[int | None] = mapped_column(BigInteger)
    head_generation: Mapped[int] = mapped_column(BigInteger, default=0)
    head_mark: Mapped[int | None] = mapped_column(BigInteger)
    wall_time: Mapped[datetime | None] = mapped_column()
    bytes_stored: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_logical: Mapped[int] = mapped_column(BigInteger, default=0)
    docs: Mapped[int] = mapped_column(BigInteger, default=0)
    manifest: Mapped[str | None] = mapped_column(String(512))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("snapshots.id", ondelete="SET NULL"))
    expires_at: Mapped[datetime | None] = mapped_column()
    lease_until: Mapped[datetime | None] = mapped_column()
    pinned_until: Mapped[datetime | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column()

    def optime_json(self) -> optime.OptimeJson | None:
        return optime.to_json(self.optime_ts)

    def __repr__(self) -> str:
        return (f"Snapshot(id={self.id!r}, job_id={self.job_id!r}, kind={self.kind!r}, "
                f"state={self.state!r})")


class SnapshotBlock(Base):
    """A block used by a layer that this snapshot wrote (its own layers)."""

    __tablename__ = "snapshot_blocks"
    __table_args__ = (Index("ix_snapshot_blocks_block_id", "block_id"),)

    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True)
    block_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class SnapshotDep(Base):
    """Snapshot ``snapshot_id``'s manifest uses layers written by ``dep_id``
    (itself included): the blocks it needs are the own blocks of its deps."""

    __tablename__ = "snapshot_deps"
    __table_args__ = (Index("ix_snapshot_deps_dep_id", "dep_id"),)

    snapshot_id: Mapped[int] = mapped_column(
        ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True)
    dep_id: Mapped[int] = mapped_column(
        ForeignKey("snapshots.id", ondelete="CASCADE"), primary_key=True)


class Block(Base):
    """The block index: one row per stored block object."""

    __tablename__ = "blocks"
    __table_args__ = (
        CheckConstraint("state IN ('live', 'deleting')", name="state"),
        Index("ix_blocks_state_touched_gen", "state", "touched_gen"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    stored_size: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="live")
    touched_gen: Mapped[int] = mapped_column(BigInteger, default=0)
    last_touched: Mapped[datetime] = mapped_column(default=utcnow)
    groom_id: Mapped[int | None] = mapped_column(Integer)


class StorageState(Base):
    """One row (id 1): the groom generation every block touch records."""

    __tablename__ = "storage_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    gen: Mapped[int] = mapped_column(BigInteger, default=0)


class SnapshotPolicy(Base):
    """Schedule and retention of one job's snapshots (Ops Manager's settings)."""

    __tablename__ = "snapshot_policies"
    __table_args__ = (
        CheckConstraint("interval_hours IN (6, 8, 12, 24)", name="interval_hours"),
        CheckConstraint("base_retention_days BETWEEN 2 AND 5", name="base_retention_days"),
        CheckConstraint(_in("store", STORES), name="store"),
    )

    job_id: Mapped[int] = mapped_column(
        ForeignKey("backup_jobs.id", ondelete="CASCADE"), primary_key=True)
    interval_hours: Mapped[int] = mapped_column(default=6)
    reference_hour: Mapped[int] = mapped_column(default=0)
    reference_minute: Mapped[int] = mapped_column(default=0)
    base_retention_days: Mapped[int] = mapped_column(default=2)
    daily_retention_days: Mapped[int] = mapped_column(default=7)
    weekly_retention_weeks: Mapped[int] = mapped_column(default=4)
    monthly_retention_months: Mapped[int] = mapped_column(default=13)
    pit_window_hours: Mapped[int] = mapped_column(default=24)
    store: Mapped[str] = mapped_column(String(16), default="blockstore")
    fs_gzip: Mapped[bool] = mapped_column(default=False, server_default=false())
    full_every: Mapped[int] = mapped_column(default=8)
    full_delta_percent: Mapped[int] = mapped_column(default=50)
    enabled: Mapped[bool] = mapped_column(default=True, server_default=true())
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class GroomRun(Base):
    """One groom: its generation, lease and what it reclaimed."""

    __tablename__ = "groom_runs"
    __table_args__ = (
        CheckConstraint("state IN ('running', 'done', 'failed')", name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    gen: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default="running")
    on_demand: Mapped[bool] = mapped_column(default=False, server_default=false())
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column()
    lease_until: Mapped[datetime | None] = mapped_column()
    blocks_deleted: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_freed: Mapped[int] = mapped_column(BigInteger, default=0)
    manifests_deleted: Mapped[int] = mapped_column(BigInteger, default=0)
    error: Mapped[str | None] = mapped_column(Text)
