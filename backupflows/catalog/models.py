"""The catalog's SQLAlchemy 2 models: deployments, backup jobs, events, and the
initial sync's namespaces, slice ranges, slices and the oplog store's segments.

Every schema change is an alembic revision under ``migrations/versions``;
``tests/foundation/test_migrations.py`` checks that the revisions build
exactly these tables. Optimes are stored packed (``backupflows.catalog.optime``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bson.timestamp import Timestamp
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from backupflows.catalog import optime
from backupflows.redact import redact_uri

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware now, for created_at/updated_at defaults."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite too)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (alembic needs them)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        datetime: UTCDateTime(),
    }


class JobState(StrEnum):
    """The life of a backup job (see DESIGN.md, vocabulary)."""

    INITIAL_SYNC = "initial_sync"
    BUILDING = "building"
    VALIDATING = "validating"
    ROUTINE = "routine"
    STOPPED = "stopped"
    RESYNC_REQUIRED = "resync_required"
    TERMINATED = "terminated"
    FAILED = "failed"


JOB_STATES: tuple[str, ...] = tuple(state.value for state in JobState)


class Deployment(Base):
    """A backed-up replica set: its URI (secret) and namespace filters."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    uri: Mapped[str] = mapped_column(Text)
    include_ns: Mapped[list[str]] = mapped_column(default=list)
    exclude_ns: Mapped[list[str]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    jobs: Mapped[list[BackupJob]] = relationship(
        back_populates="deployment", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def redacted_uri(self) -> str:
        """The URI with its password (and secret options) masked: print this one."""
        return redact_uri(self.uri)

    def __repr__(self) -> str:
        return f"Deployment(id={self.id!r}, name={self.name!r}, uri={self.redacted_uri!r})"


class BackupJob(Base):
    """One replica set followed through initial sync, routine, resyncs."""

    __tablename__ = "backup_jobs"
    __table_args__ = (
        CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in JOB_STATES) + ")", name="state"
        ),
        Index("ix_backup_jobs_state", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(32), default=JobState.INITIAL_SYNC.value)
    t0_ts: Mapped[int | None] = mapped_column(BigInteger)
    head_ts: Mapped[int | None] = mapped_column(BigInteger)
    oplog_ts: Mapped[int | None] = mapped_column(BigInteger)
    daemon_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    auto_resync: Mapped[bool] = mapped_column(default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # -- revision 0002: initial sync generations, leases, lag --
    generation: Mapped[int] = mapped_column(default=1, server_default="1")
    source_ts: Mapped[int | None] = mapped_column(BigInteger)  # newest optime seen at the source
    lag_seconds: Mapped[float | None] = mapped_column(Float)
    last_round_at: Mapped[datetime | None] = mapped_column()
    last_apply_at: Mapped[datetime | None] = mapped_column()
    synced_at: Mapped[datetime | None] = mapped_column()  # this generation reached routine
    oplog_lease_owner: Mapped[str | None] = mapped_column(String(64))
    oplog_lease_expires: Mapped[datetime | None] = mapped_column()
    head_lease_owner: Mapped[str | None] = mapped_column(String(64))
    head_lease_expires: Mapped[datetime | None] = mapped_column()
    workflow_id: Mapped[str | None] = mapped_column(String(64))

    deployment: Mapped[Deployment] = relationship(back_populates="jobs")

    @property
    def t0(self) -> Timestamp | None:
        """T0, the source optime the initial sync started from."""
        return optime.unpack_optional(self.t0_ts)

    @t0.setter
    def t0(self, ts: Timestamp | None) -> None:
        self.t0_ts = optime.pack_optional(ts)

    @property
    def head_optime(self) -> Timestamp | None:
        """The last oplog optime applied to the head."""
        return optime.unpack_optional(self.head_ts)

    @head_optime.setter
    def head_optime(self, ts: Timestamp | None) -> None:
        self.head_ts = optime.pack_optional(ts)

    @property
    def oplog_optime(self) -> Timestamp | None:
        """The last optime stored in the oplog store."""
        return optime.unpack_optional(self.oplog_ts)

    @oplog_optime.setter
    def oplog_optime(self, ts: Timestamp | None) -> None:
        self.oplog_ts = optime.pack_optional(ts)

    def __repr__(self) -> str:
        return f"BackupJob(id={self.id!r}, deployment_id={self.deployment_id!r}, state={self.state!r})"


class Event(Base):
    """One line of the history operators read (state changes, resyncs, alerts...)."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_job_id_id", "job_id", "id"),
        Index("ix_events_deployment_id_id", "deployment_id", "id"),
        Index("ix_events_kind", "kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("backup_jobs.id", ondelete="SET NULL")
    )
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"Event(id={self.id!r}, kind={self.kind!r}, job_id={self.job_id!r})"


class SyncNamespace(Base):
    """A namespace of the source as the initial sync of one generation found it."""

    __tablename__ = "sync_namespaces"
    __table_args__ = (UniqueConstraint("job_id", "generation", "db", "coll",
                                       name="uq_sync_namespaces_job_ns"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("backup_jobs.id", ondelete="CASCADE"))
    generation: Mapped[int] = mapped_column()
    db: Mapped[str] = mapped_column(String(255))
    coll: Mapped[str] = mapped_column(String(255))
    uuid: Mapped[bytes | None] = mapped_column(LargeBinary)
    type: Mapped[str] = mapped_column(String(16))
    options: Mapped[bytes] = mapped_column(LargeBinary)  # raw BSON, server field order
    indexes: Mapped[bytes] = mapped_column(LargeBinary)  # raw BSON spec documents, concatenated
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    size: Mapped[int] = mapped_column(BigInteger, default=0)

    @property
    def ns(self) -> str:
        return f"{self.db}.{self.coll}"


class SliceRange(Base):
    """An ``_id`` range of one collection, sliced by one agent task at a time."""

    __tablename__ = "slice_ranges"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'done')", name="state"),
        Index("ix_slice_ranges_job_gen_state", "job_id", "generation", "state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("backup_jobs.id", ondelete="CASCADE"))
    generation: Mapped[int] = mapped_column()
    namespace_id: Mapped[int] = mapped_column(
        ForeignKey("sync_namespaces.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column()
    lo: Mapped[bytes | None] = mapped_column(LargeBinary)  # raw bound document, None = MinKey
    hi: Mapped[bytes | None] = mapped_column(LargeBinary)  # raw bound document, None = MaxKey
    resume_after: Mapped[bytes | None] = mapped_column(LargeBinary)  # raw {_id} last stored
    state: Mapped[str] = mapped_column(String(16), default="pending")
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires: Mapped[datetime | None] = mapped_column()
    enqueued_at: Mapped[datetime | None] = mapped_column()
    slices: Mapped[int] = mapped_column(default=0)
    docs: Mapped[int] = mapped_column(BigInteger, default=0)
    nbytes: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Slice(Base):
    """~10 MB of raw documents of one range, stored as one object until the head is built."""

    __tablename__ = "slices"
    __table_args__ = (UniqueConstraint("range_id", "seq", name="uq_slices_range_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    range_id: Mapped[int] = mapped_column(ForeignKey("slice_ranges.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column()
    object_name: Mapped[str] = mapped_column(Text)
    docs: Mapped[int] = mapped_column()
    nbytes: Mapped[int] = mapped_column(BigInteger)
    first_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    last_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    loaded: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OplogSegment(Base):
    """Oplog entries after ``after_ts`` up to ``last_ts`` (inclusive), one stored
    object; a job's segments chain: each ``after_ts`` is the previous ``last_ts``."""

    __tablename__ = "oplog_segments"
    __table_args__ = (
        UniqueConstraint("job_id", "generation", "after_ts", name="uq_oplog_segments_start"),
        Index("ix_oplog_segments_job_last", "job_id", "last_ts"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("backup_jobs.id", ondelete="CASCADE"))
    generation: Mapped[int] = mapped_column()
    after_ts: Mapped[int] = mapped_column(BigInteger)  # packed position before (exclusive)
    last_ts: Mapped[int] = mapped_column(BigInteger)  # packed position reached (inclusive)
    count: Mapped[int] = mapped_column()
    nbytes: Mapped[int] = mapped_column(BigInteger)
    object_name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
