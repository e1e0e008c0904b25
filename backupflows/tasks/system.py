"""System tasks: ``backupflows.system.ping`` answers which daemon ran it."""

from __future__ import annotations

import os
import socket
from typing import Any

from backupflows import __version__
from backupflows.settings import get_settings
from backupflows.tasks.app import app


@app.task(name="backupflows.system.ping")
def ping() -> dict[str, Any]:
    """Return the daemon id, version, host and pid of the worker that ran it."""
    return {
        "daemon_id": get_settings().daemon_id,
        "version": __version__,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
    }
