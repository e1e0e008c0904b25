"""Delivery of alert notifications to a webhook (JSON POST), with retries.

Every alert has two notifications: ``opened`` and, later, ``closed``. A pass
(``deliver``) sends each one not delivered yet, in alert order, trying up to
``webhook_tries`` times with backoff (0.5 s, 1 s, 2 s...); a notification
still undelivered is tried again on the next passes, until the alert has
had ``webhook_max_attempts`` failed attempts. Only alerts open, or closed in
the last day, are delivered (configuring a webhook later does not replay
old history). A 2xx answer is delivery. Receivers may see a notification
twice (a crash between the POST and its record): ``alert.id`` + ``event``
identify it.

Body::

    {"event": "opened" | "closed", "alert": {id, kind, state, subject,
     deployment, job, daemon_id, message, data, opened_at, closed_at}}
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import or_, select

from backupflows.alerts.config import AlertConfig, alert_config
from backupflows.alerts.service import describe
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import utcnow
from backupflows.catalog.ops_models import Alert
from backupflows.redact import redact_text

log = logging.getLogger(__name__)
TIMEOUT = 10.0


@dataclass
class Delivery:
    sent: int = 0
    failed: int = 0


def _where(url: str) -> str:
    """Scheme and host only: webhook paths often hold a secret."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def post(url: str, body: dict[str, object], tries: int, backoff: float = 0.5) -> str | None:
    """POST ``body``; None when a try got a 2xx answer, else the last error."""
    data = json.dumps(body).encode()
    error = None
    for attempt in range(tries):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        req = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "backupflows-alerts"})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                if 200 <= resp.status < 300:
                    return None
                error = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
    return redact_text(error or "no answer")


def deliver(cfg: AlertConfig | None = None, url: str | None = None,
            backoff: float = 0.5) -> Delivery:
    """Send every pending notification (see module doc); what was sent and what failed."""
    cfg = cfg or alert_config()
    result = Delivery()
    if not cfg.webhook_url:
        return result
    with session_scope(url, readonly=True) as s:
        recent = utcnow() - timedelta(days=1)
        rows = s.scalars(select(Alert).where(
            Alert.delivery_attempts < cfg.webhook_max_attempts,
            or_(Alert.open_sent_at.is_(None),
                (Alert.state == "closed") & Alert.close_sent_at.is_(None)),
            or_(Alert.state == "open", Alert.closed_at >= recent)).order_by(Alert.id)).all()
        pending = [(row.id, row.open_sent_at is None, row.state == "closed", describe(s, row))
                   for row in rows]
    for alert_id, need_open, need_close, body in pending:
        events = (["opened"] if need_open else []) + (["closed"] if need_close else [])
        for event in events:
            error = post(cfg.webhook_url, {"event": event, "alert": body}, cfg.webhook_tries,
                         backoff)
            _record(alert_id, event, error, url)
            if error:
                result.failed += 1
                log.warning("alert %s: webhook %s failed: %s", alert_id,
                            _where(cfg.webhook_url), error)
                break  # 'closed' never before 'opened'
            result.sent += 1
    return result


def _record(alert_id: int, event: str, error: str | None, url: str | None) -> None:
    with session_scope(url) as s:
        row = s.get(Alert, alert_id)
        if row is None:
            return
        if error is None:
            if event == "opened":
                row.open_sent_at = utcnow()
            else:
                row.close_sent_at = utcnow()
            row.delivery_error = None
        else:
            row.delivery_attempts += 1
            row.delivery_error = error
