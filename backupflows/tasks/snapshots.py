"""Celery tasks of snapshot storage: thin wrappers over ``backupflows.storage``.

- ``backupflows.storage.take_snapshot(job_id, on_demand)``: reads the head,
  so it is sent to the queue of the daemon that holds it
  (``daemon_queue(job.daemon_id)``), not to the storage queue its prefix
  routes to by default. Idempotent: a second delivery while the first runs
  meets the per-job claim (``Conflict``) and stops; after a crash the
  pending row's lease lapses and the next run starts a fresh snapshot.
- beat dispatchers: ``dispatch_snapshots`` (due schedules), ``expire``
  (retention), ``groom_check`` (Ops Manager's trigger), ``integrity_check``
  (weekly; failures raise alert events).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from backupflows.errors import Conflict
from backupflows.storage import integrity, operations
from backupflows.storage.service import Storage
from backupflows.tasks.app import app
from backupflows.tasks.queues import DAEMON, daemon_queue

log = logging.getLogger(__name__)


def _storage() -> Storage:
    return Storage.open()


@app.task(name="backupflows.storage.take_snapshot", bind=True)
def take_snapshot(self: Task, job_id: int, on_demand: bool = False) -> Any:
    def report(stats: Any) -> None:
        if self.request.id:
            self.update_state(state="PROGRESS", meta={
                "job": job_id, "blocks_new": stats.blocks_new, "docs": stats.docs,
                "bytes_stored": stats.bytes_stored, "blocks_reused": stats.blocks_reused})
    try:
        sid = operations.take_for_job(_storage(), job_id, on_demand=on_demand, progress=report)
    except Conflict as exc:
        log.info("job %s: %s", job_id, exc)
        return {"job": job_id, "snapshot": None, "status": "already running"}
    return {"job": job_id, "snapshot": sid, "status": "done"}


def send_take(job_id: int, daemon_id: str | None, on_demand: bool = False) -> Any:
    """Queue a snapshot of ``job_id`` on the queue of the daemon holding its head."""
    queue = daemon_queue(daemon_id) if daemon_id else DAEMON
    return take_snapshot.apply_async((job_id, on_demand), queue=queue)


@app.task(name="backupflows.storage.dispatch_snapshots")
def dispatch_snapshots() -> int:
    due = operations.due_jobs(_storage())
    for d in due:
        send_take(d.job_id, d.daemon_id)
    return len(due)


@app.task(name="backupflows.storage.expire")
def expire() -> int:
    decisions = operations.expire(_storage())
    return sum(1 for ds in decisions.values() for d in ds if not d.keep)


@app.task(name="backupflows.storage.groom_check")
def groom_check() -> dict[str, Any] | None:
    result = operations.groom_if_due(_storage())
    if result is None:
        return None
    return {"groom": result.groom_id, "blocks_deleted": result.blocks_deleted,
            "bytes_freed": result.bytes_freed}


@app.task(name="backupflows.storage.integrity_check")
def integrity_check() -> dict[str, Any]:
    return integrity.check_storage(_storage()).to_json()
