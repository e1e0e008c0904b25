"""Catalog models of operations: alerts and daemon heartbeats.

Revision ``migrations/versions/0005_alerts.py`` creates these tables.

An alert is open while its condition holds: ``open_key`` (``kind:subject``)
is set only while it is open, and is unique, so a condition has at most one
open alert however many dispatchers evaluate it at once. Closing sets
``closed_at`` and clears ``open_key``. ``open_sent_at``/``close_sent_at``
record webhook delivery of the two notifications.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backupflows.catalog.models import Base, utcnow

ALERT_KINDS: tuple[str, ...] = (
    "oplog_behind", "head_behind", "late_snapshot", "resync_required", "job_failed",
    "integrity_failure", "daemon_down", "low_head_disk_space",
)


class Alert(Base):
    """One alert: opened when its condition is found, closed when it clears."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint("state IN ('open', 'closed')", name="state"),
        Index("ix_alerts_state_id", "state", "id"),
        Index("ix_alerts_job_id_id", "job_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))  # job:<id>, daemon:<id>, snapshot:<id>
    open_key: Mapped[str | None] = mapped_column(String(300), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="open")
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("backup_jobs.id", ondelete="SET NULL"))
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"))
    daemon_id: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column()
    open_sent_at: Mapped[datetime | None] = mapped_column()
    close_sent_at: Mapped[datetime | None] = mapped_column()
    delivery_attempts: Mapped[int] = mapped_column(default=0)
    delivery_error: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"Alert(id={self.id!r}, kind={self.kind!r}, subject={self.subject!r}, state={self.state!r})"


class DaemonHeartbeat(Base):
    """The last report of one daemon (a worker consuming ``daemon.<id>``)."""

    __tablename__ = "daemon_heartbeats"

    daemon_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(default=0)
    version: Mapped[str] = mapped_column(String(64), default="")
    heads_dir: Mapped[str] = mapped_column(Text, default="")
    disk_free: Mapped[int | None] = mapped_column(BigInteger)
    disk_total: Mapped[int | None] = mapped_column(BigInteger)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)
