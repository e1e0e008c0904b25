"""The catalog's SQLAlchemy 2 models: deployments, backup jobs, events.

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
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
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
