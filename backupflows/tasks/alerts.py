"""Alert tasks: the beat dispatcher and the daemon heartbeat.

- ``backupflows.alerts.dispatch`` (beat, every ``BACKUPFLOWS_ALERT_INTERVAL``):
  asks every daemon to report (``backupflows.system.heartbeat`` on its own
  queue, expiring after one interval: a daemon that is down does not pile
  them up), then runs one alert pass (``backupflows.alerts.run_pass``);
- ``backupflows.system.heartbeat``: the daemon that runs it records its report.

Both are idempotent: a repeated pass changes nothing, a repeated report only
refreshes ``seen_at``.
"""

from __future__ import annotations

import logging
from typing import Any

from backupflows.alerts import heartbeat as beats
from backupflows.alerts import run_pass
from backupflows.alerts.config import alert_config
from backupflows.tasks.app import app
from backupflows.tasks.queues import daemon_queue

log = logging.getLogger(__name__)


@app.task(name="backupflows.alerts.dispatch")
def dispatch() -> dict[str, Any]:
    """Ask daemons to report, then evaluate alerts and deliver notifications."""
    interval = alert_config().interval
    asked = beats.daemons_to_ask()
    for daemon_id in asked:
        heartbeat.apply_async(queue=daemon_queue(daemon_id), expires=float(max(interval, 10)))
    out = run_pass()
    out["daemons_asked"] = asked
    return out


@app.task(name="backupflows.system.heartbeat")
def heartbeat() -> dict[str, Any]:
    """Record that this daemon is alive, with its heads disk's free space."""
    return beats.record()
