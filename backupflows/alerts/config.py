"""Alert thresholds and delivery, from ``BACKUPFLOWS_ALERT_*`` variables.

Defaults are Ops Manager's.

=====================================  ========  ==========================================
variable                               default   meaning
=====================================  ========  ==========================================
``ALERT_WEBHOOK_URL``                  (none)    JSON POST of every alert opened or closed
``ALERT_WEBHOOK_TRIES``                3         attempts per dispatcher pass (backoff 0.5,
                                                 1, 2 s...); undelivered notifications are
                                                 tried again on the next passes
``ALERT_WEBHOOK_MAX_ATTEMPTS``         20        ... until this many attempts in all
``ALERT_INTERVAL``                     60        beat: seconds between alert passes (and
                                                 daemon heartbeat requests)
``ALERT_OPLOG_BEHIND``                 3600      seconds: last stored oplog older than this
``ALERT_HEAD_BEHIND``                  3600      seconds: head behind the stored oplog
``ALERT_SNAPSHOT_LATE_FACTOR``         1.5       last snapshot older than this many
                                                 snapshot intervals
``ALERT_DAEMON_DOWN``                  900       seconds without a report from a daemon
                                                 that holds heads
``ALERT_DISK_FREE_BYTES``              1GiB      heads disk free below this ...
``ALERT_DISK_FREE_PERCENT``            10        ... or below this percentage
=====================================  ========  ==========================================
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

from backupflows.errors import ConfigError
from backupflows.settings import PREFIX, parse_seconds, parse_size


@dataclass(frozen=True)
class AlertConfig:
    """See the module docstring."""

    webhook_url: str | None = None
    webhook_tries: int = 3
    webhook_max_attempts: int = 20
    interval: int = 60
    oplog_behind: int = 3600
    head_behind: int = 3600
    snapshot_late_factor: float = 1.5
    daemon_down: int = 900
    disk_free_bytes: int = 1024**3
    disk_free_percent: float = 10.0


_SECONDS = {"ALERT_WEBHOOK_TRIES": "webhook_tries",
            "ALERT_WEBHOOK_MAX_ATTEMPTS": "webhook_max_attempts",
            "ALERT_INTERVAL": "interval", "ALERT_OPLOG_BEHIND": "oplog_behind",
            "ALERT_HEAD_BEHIND": "head_behind", "ALERT_DAEMON_DOWN": "daemon_down"}


def _number(name: str, raw: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected a number") from None
    if not low < value <= high:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: must be above {low:g} and at most {high:g}")
    return value


def load_alert_config(env: Mapping[str, str] | None = None) -> AlertConfig:
    """The alert settings from ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env

    def raw(name: str) -> str:
        return (env.get(PREFIX + name) or "").strip()

    values: dict[str, object] = {}
    for name, field in _SECONDS.items():
        if raw(name):
            values[field] = parse_seconds(name, raw(name))
    url = raw("ALERT_WEBHOOK_URL")
    if url:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{PREFIX}ALERT_WEBHOOK_URL: expected an http:// or https:// URL")
        values["webhook_url"] = url
    if raw("ALERT_SNAPSHOT_LATE_FACTOR"):
        values["snapshot_late_factor"] = _number(
            "ALERT_SNAPSHOT_LATE_FACTOR", raw("ALERT_SNAPSHOT_LATE_FACTOR"), 1.0, 100.0)
    if raw("ALERT_DISK_FREE_BYTES"):
        values["disk_free_bytes"] = parse_size("ALERT_DISK_FREE_BYTES", raw("ALERT_DISK_FREE_BYTES"))
    if raw("ALERT_DISK_FREE_PERCENT"):
        values["disk_free_percent"] = _number(
            "ALERT_DISK_FREE_PERCENT", raw("ALERT_DISK_FREE_PERCENT"), 0.0, 100.0)
    return AlertConfig(**values)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=1)
def alert_config() -> AlertConfig:
    """This process's alert settings (read once)."""
    return load_alert_config()
