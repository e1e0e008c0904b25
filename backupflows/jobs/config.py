"""Tunables of backup jobs, from ``BACKUPFLOWS_*`` environment variables.

============================  =======  ===============================================
variable                      default  meaning
============================  =======  ===============================================
``LEASE_SECONDS``             60       a claim on a job's oplog/head work or on a range
                                       lasts this long unless renewed (a killed
                                       worker's work is taken over after it)
``OPLOG_ROUND_SECONDS``       1        one oplog round reads for at most this long
``OPLOG_AWAIT_MS``            200      ... and ends when a read waited this long for a
                                       new entry (caught up)
``OPLOG_ROUND_BYTES``         16MiB    ... or this many bytes of entries (one segment)
``OPLOG_INTERVAL``            2        beat: seconds between oplog round dispatches
``APPLY_INTERVAL``            2        beat: seconds between apply round dispatches
``RECONCILE_INTERVAL``        30       beat: seconds between reconcile passes
``REQUEUE_SECONDS``           300      reconcile re-sends a range task not claimed for
                                       this long (a message lost with the broker)
``MAX_RANGES``                8        at most this many ``_id`` ranges per collection
``APPLY_BATCH``               1000     oplog entries per head transaction
``SOURCE_RETRIES``            6        a step that fails on the source is retried this
                                       many times (exponential backoff) before the job
                                       is ``failed``
``SOURCE_TIMEOUT``            10       seconds to find and connect to the source
``PRELOAD``                   on       the daemon loads slices into the head while
                                       ranges are still being sliced
============================  =======  ===============================================

``SLICE_BYTES`` (the slice size) is in ``backupflows.settings``. Read once per
process (``job_config()``); tests set the variables before starting workers.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

from backupflows.errors import ConfigError
from backupflows.settings import PREFIX, MiB, parse_bool, parse_size


@dataclass(frozen=True)
class JobConfig:
    """See the module docstring."""

    lease_seconds: int = 60
    oplog_round_seconds: int = 1
    oplog_await_ms: int = 200
    oplog_round_bytes: int = 16 * MiB
    oplog_interval: int = 2
    apply_interval: int = 2
    reconcile_interval: int = 30
    requeue_seconds: int = 300
    max_ranges: int = 8
    apply_batch: int = 1000
    source_retries: int = 6
    source_timeout: int = 10
    preload: bool = True

    @property
    def slice_more_seconds(self) -> float:
        """How long a slice task goes on with other free ranges of its job after
        its own (``sync.slice_range``): a few seconds, so the agent slot comes
        back for oplog rounds and other jobs."""
        return float(max(2, min(10, self.lease_seconds // 4)))

    @property
    def oplog_lease_seconds(self) -> int:
        """A round holds its lease for the round plus a margin."""
        return max(self.lease_seconds, 3 * self.oplog_round_seconds)


_COUNTS = ("lease_seconds", "oplog_round_seconds", "oplog_await_ms", "oplog_interval",
           "apply_interval", "reconcile_interval", "requeue_seconds", "max_ranges", "apply_batch",
           "source_retries", "source_timeout")


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected a whole number") from None
    if value <= 0:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: must be greater than zero")
    return value


def load_job_config(env: Mapping[str, str] | None = None) -> JobConfig:
    """The job tunables from ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    values: dict[str, int] = {}
    for name in _COUNTS:
        raw = (env.get(PREFIX + name.upper()) or "").strip()
        if raw:
            values[name] = _positive_int(name.upper(), raw)
    raw = (env.get(PREFIX + "PRELOAD") or "").strip()
    preload = parse_bool("PRELOAD", raw) if raw else True
    raw = (env.get(PREFIX + "OPLOG_ROUND_BYTES") or "").strip()
    if raw:
        values["oplog_round_bytes"] = parse_size("OPLOG_ROUND_BYTES", raw)
    return JobConfig(**values, preload=preload)


@functools.lru_cache(maxsize=1)
def job_config() -> JobConfig:
    """This process's job tunables (read once)."""
    return load_job_config()
