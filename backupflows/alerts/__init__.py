"""Alerts: conditions read from the catalog, opened and closed as alerts,
delivered to the log, the catalog's history and a webhook. No Celery here:
``backupflows.tasks.alerts`` runs ``run_pass`` from beat.

- ``conditions``: what is wrong now (pure reads of the catalog);
- ``service``: open/close alerts, list them;
- ``webhook``: JSON POST of each opened/closed notification, retried;
- ``heartbeat``: daemons report (alive, free space of the heads disk);
- ``config``: thresholds (``BACKUPFLOWS_ALERT_*``).
"""

from __future__ import annotations

from typing import Any


def run_pass(url: str | None = None) -> dict[str, Any]:
    """One alert pass: evaluate every condition, then deliver notifications."""
    from backupflows.alerts import service, webhook

    changes = service.evaluate(url=url)
    sent = webhook.deliver(url=url)
    return {"opened": [a["id"] for a in changes.opened],
            "closed": [a["id"] for a in changes.closed],
            "open": changes.still_open, "webhook_sent": sent.sent,
            "webhook_failed": sent.failed}
