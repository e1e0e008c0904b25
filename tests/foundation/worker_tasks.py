"""Tasks only the worker tests load (``backupflows worker -I tests.foundation.worker_tasks``)."""

from __future__ import annotations

import os
import time

from backupflows.tasks.app import app


@app.task(name="backupflows.testing.mark_and_sleep")
def mark_and_sleep(path: str, seconds: float) -> int:
    """Append ``start <pid>``, sleep, append ``done <pid>``: the file tells each run apart."""
    with open(path, "a") as f:
        f.write(f"start {os.getpid()}\n")
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"done {os.getpid()}\n")
    return os.getpid()
