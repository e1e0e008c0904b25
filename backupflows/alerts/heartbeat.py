"""Daemon heartbeats: each daemon reports that it is alive and how much room
its heads directory has; ``daemon_down`` and ``low_head_disk_space`` read it.

The alert dispatcher asks every daemon that holds heads (and every daemon
that reported before) to report, through a ``backupflows.system.heartbeat``
task on the daemon's own queue; a daemon that is down does not answer and
its ``seen_at`` grows old.
"""

from __future__ import annotations

import os
import shutil
import socket
from datetime import timedelta

from sqlalchemy import select

from backupflows import __version__
from backupflows.alerts.conditions import current_jobs
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import utcnow
from backupflows.catalog.ops_models import DaemonHeartbeat
from backupflows.settings import Settings, get_settings


def record(settings: Settings | None = None, url: str | None = None) -> dict[str, object]:
    """Write this daemon's report (upsert by daemon id); return it."""
    settings = settings or get_settings()
    heads = settings.heads_dir
    heads.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(heads)
    report = {"daemon_id": settings.daemon_id, "hostname": socket.gethostname(),
              "pid": os.getpid(), "version": __version__, "heads_dir": str(heads),
              "disk_free": usage.free, "disk_total": usage.total}
    with session_scope(url) as s:
        row = s.get(DaemonHeartbeat, settings.daemon_id)
        if row is None:
            s.add(DaemonHeartbeat(**report, seen_at=utcnow()))
        else:
            for key, value in report.items():
                setattr(row, key, value)
            row.seen_at = utcnow()
    return report


def daemons_to_ask(url: str | None = None) -> list[str]:
    """Daemons holding heads of jobs not terminated, and daemons that reported in the
    last day (a retired daemon's queue does not collect a request a minute forever)."""
    with session_scope(url, readonly=True) as s:
        ids = {v.job.daemon_id for v in current_jobs(s) if v.job.daemon_id}
        recent = utcnow() - timedelta(days=1)
        ids |= set(s.scalars(select(DaemonHeartbeat.daemon_id)
                             .where(DaemonHeartbeat.seen_at >= recent)))
    return sorted(ids)
