"""Catalog models of restores: the restores themselves and their download links.

Revision ``migrations/versions/0004_restores.py`` creates these tables.

A restore's ``destination`` JSON holds what the worker needs (a path, a target
URI, gzip/drop flags). A target URI may carry a password: it is kept only
while the restore can still run, redacted in every output (``to_json``,
errors, logs), and replaced by its redacted form once the restore is done or
failed (``backupflows.restore.service.finish``).

A download link's token is never stored: the row keeps its SHA-256
(``token_hash``) and the salt it is derived from (``backupflows.restore.download``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backupflows.catalog import optime
from backupflows.catalog.models import Base, utcnow
from backupflows.redact import redact_uri


class RestoreState(StrEnum):
    QUEUED = "queued"    # requested, waiting for a restore worker
    RUNNING = "running"  # claimed by a worker (lease renewed while it runs)
    DONE = "done"        # delivered and verified
    FAILED = "failed"    # refused, failed or failed its verification: never done


RESTORE_STATES = tuple(s.value for s in RestoreState)
DESTINATION_KINDS = ("dir", "archive", "download", "uri")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


class Restore(Base):
    """One restore: its source, destination, selection, state and progress."""

    __tablename__ = "restores"
    __table_args__ = (
        CheckConstraint(_in("state", RESTORE_STATES), name="state"),
        CheckConstraint(_in("destination_kind", DESTINATION_KINDS), name="destination_kind"),
        Index("ix_restores_state", "state"),
        Index("ix_restores_deployment_id_id", "deployment_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="SET NULL"))
    deployment_name: Mapped[str] = mapped_column(String(200))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("backup_jobs.id", ondelete="SET NULL"))
    snapshot_id: Mapped[int | None] = mapped_column(
        ForeignKey("snapshots.id", ondelete="SET NULL"))
    point_ts: Mapped[int | None] = mapped_column(BigInteger)  # packed optime of --at
    destination_kind: Mapped[str] = mapped_column(String(16))
    destination: Mapped[dict[str, Any]] = mapped_column(default=dict)
    selection: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16), default=RestoreState.QUEUED.value)
    docs: Mapped[int] = mapped_column(BigInteger, default=0)
    nbytes: Mapped[int] = mapped_column(BigInteger, default=0)
    collections_done: Mapped[int] = mapped_column(default=0)
    collections_total: Mapped[int] = mapped_column(default=0)
    step: Mapped[str | None] = mapped_column(String(32))
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_state: Mapped[str | None] = mapped_column(String(16))  # sent | failed
    requester: Mapped[str | None] = mapped_column(String(200))
    task_id: Mapped[str | None] = mapped_column(String(64))
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    @property
    def finished(self) -> bool:
        return self.state in (RestoreState.DONE, RestoreState.FAILED)

    def redacted_destination(self) -> dict[str, Any]:
        dest = dict(self.destination or {})
        if isinstance(dest.get("uri"), str):
            dest["uri"] = redact_uri(dest["uri"])
        return dest

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` / HTTP form (no secret in it)."""
        return {
            "id": self.id, "request_id": self.request_id, "deployment": self.deployment_name,
            "job": self.job_id, "snapshot": self.snapshot_id,
            "point": optime.to_json(self.point_ts), "state": self.state,
            "destination": {"kind": self.destination_kind, **self.redacted_destination()},
            "selection": self.selection or {},
            "progress": {"step": self.step, "docs": self.docs, "bytes": self.nbytes,
                         "collections_done": self.collections_done,
                         "collections_total": self.collections_total},
            "result": self.result or {}, "error": self.error,
            "callback_url": self.callback_url, "callback_state": self.callback_state,
            "requester": self.requester, "task_id": self.task_id,
            "created_at": _iso(self.created_at), "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }

    def __repr__(self) -> str:
        return f"Restore(id={self.id!r}, state={self.state!r}, kind={self.destination_kind!r})"


class DownloadLink(Base):
    """A token-protected link to a restore's file: expires, and works ``uses_left`` times."""

    __tablename__ = "download_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    restore_id: Mapped[int] = mapped_column(ForeignKey("restores.id", ondelete="CASCADE"),
                                            index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    salt: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[datetime] = mapped_column()
    uses_left: Mapped[int] = mapped_column()
    max_uses: Mapped[int] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
