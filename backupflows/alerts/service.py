"""Opening and closing alerts, and reading them.

``evaluate`` runs every condition (``backupflows.alerts.conditions``) and
reconciles the result with the open alerts in one transaction: a new
finding opens an alert, a finding no longer found closes its alert. Each
opening and closing appends an ``alert.opened``/``alert.closed`` event to the
catalog's history and a log line (WARNING when opened, INFO when closed).
Idempotent: evaluating twice changes nothing the second time, and two
evaluations at once cannot open the same alert twice (``open_key`` is
unique; the loser retries).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backupflows.alerts.conditions import Finding, find_all
from backupflows.alerts.config import AlertConfig, alert_config
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import Deployment, Event, utcnow
from backupflows.catalog.ops_models import Alert

log = logging.getLogger(__name__)
OPENED, CLOSED = "alert.opened", "alert.closed"


@dataclass
class Changes:
    opened: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)
    still_open: int = 0


def evaluate(now: datetime | None = None, cfg: AlertConfig | None = None,
             url: str | None = None) -> Changes:
    """Open alerts for new findings, close those that cleared (see module doc)."""
    cfg = cfg or alert_config()
    for attempt in range(3):
        try:
            with session_scope(url) as s:
                changes = _reconcile(s, find_all(s, now or utcnow(), cfg), now or utcnow())
            break
        except IntegrityError:  # another evaluation opened the same alert first
            if attempt == 2:
                raise
    for row in changes.opened:
        log.warning("alert opened: [%s] %s", row["kind"], row["message"],
                    extra={"alert_id": row["id"], "alert_kind": row["kind"]})
    for row in changes.closed:
        log.info("alert closed: [%s] %s", row["kind"], row["message"],
                 extra={"alert_id": row["id"], "alert_kind": row["kind"]})
    return changes


def _reconcile(s: Session, findings: list[Finding], now: datetime) -> Changes:
    open_rows = {a.open_key: a for a in s.scalars(select(Alert).where(Alert.state == "open"))}
    changes = Changes()
    for f in findings:
        row = open_rows.pop(f.key, None)
        if row is not None:
            row.message, row.data = f.message, f.data  # keep the figures current
            continue
        row = Alert(kind=f.kind, subject=f.subject, open_key=f.key, state="open",
                    job_id=f.job_id, deployment_id=f.deployment_id, daemon_id=f.daemon_id,
                    message=f.message, data=f.data, opened_at=now, delivery_attempts=0)
        s.add(row)
        s.flush()
        _event(s, row, OPENED, f"alert opened: {f.message}")
        changes.opened.append(describe(s, row))
    for row in open_rows.values():
        hit = s.execute(update(Alert).where(Alert.id == row.id, Alert.state == "open")
                        .values(state="closed", open_key=None, closed_at=now)).rowcount
        if hit:
            s.refresh(row)
            _event(s, row, CLOSED, f"alert closed: {row.message}")
            changes.closed.append(describe(s, row))
    changes.still_open = len(findings)
    return changes


def _event(s: Session, row: Alert, kind: str, message: str) -> None:
    s.add(Event(job_id=row.job_id, deployment_id=row.deployment_id, kind=kind,
                message=message, data={"alert": row.id, "kind": row.kind,
                                       "subject": row.subject, **(row.data or {})}))


def describe(s: Session, row: Alert) -> dict[str, Any]:
    """An alert as ``alerts --json`` and the webhook show it."""
    dep = s.get(Deployment, row.deployment_id) if row.deployment_id else None
    return {"id": row.id, "kind": row.kind, "state": row.state, "subject": row.subject,
            "deployment": dep.name if dep else None, "job": row.job_id,
            "daemon_id": row.daemon_id, "message": row.message, "data": row.data,
            "opened_at": row.opened_at.isoformat(),
            "closed_at": row.closed_at.isoformat() if row.closed_at else None}


def list_alerts(*, include_closed: bool = False, deployment: str | None = None,
                limit: int = 200, url: str | None = None) -> list[dict[str, Any]]:
    """Open alerts (oldest first), or the latest ``limit`` alerts with ``include_closed``."""
    with session_scope(url, readonly=True) as s:
        q = select(Alert)
        if not include_closed:
            q = q.where(Alert.state == "open").order_by(Alert.id)
        else:
            q = q.order_by(Alert.id.desc()).limit(limit)
        if deployment is not None:
            dep = s.scalar(select(Deployment).where(Deployment.name == deployment))
            if dep is None:
                from backupflows.errors import NotFound

                raise NotFound(f"no deployment named {deployment!r}")
            q = q.where(Alert.deployment_id == dep.id)
        rows = [describe(s, a) for a in s.scalars(q)]
    return rows if not include_closed else rows[::-1]
