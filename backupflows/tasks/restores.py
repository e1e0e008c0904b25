"""Celery tasks of restores: thin wrappers over ``backupflows.restore.service``.

The contract other services use (``send_task`` by name, plain keyword
arguments, JSON serialization)::

    app.send_task("backupflows.restore.request", queue="restore", kwargs={
        "deployment": "rs0",                    # deployment name
        "snapshot_id": 42,                      # or "at": "2024-11-28T10:15:00Z" / "1732788900:3"
        "destination": {"kind": "dir", "path": "/restores/rs0"},
            # {"kind": "archive", "path": "/restores/rs0.archive", "gzip": true}
            # {"kind": "download", "format": "dir"|"archive",
            #  "expires_seconds": 3600, "max_downloads": 1}
            # {"kind": "uri", "uri": "mongodb://...", "drop": false}
        "selection": {"include": ["shop.*"], "exclude": [], "ns_from": [], "ns_to": [],
                      "include_users": false},   # optional
        "callback_url": "https://svc/hooks/restore",   # optional: POSTed the result JSON
        "request_id": "svc-7f3a",               # optional: retries return the same restore
        "requester": "billing-service",         # optional: who asked
    })  # -> the restore id (int)

Send it to the ``restore`` queue (a bare Celery app of another service
does not know our routes; backupflows' own app routes ``backupflows.restore.*``
there). ``backupflows.restore.request`` validates the request (a point outside the
restorable window fails the task with the restorable ranges), records a
``queued`` restore and enqueues ``backupflows.restore.run(restore_id)`` on
the restore queue; it returns the restore id. Without ``request_id`` the
task's own id is used, so a redelivered request never creates two restores.
Poll ``GET /restores/{id}`` (``backupflows serve``), ``backupflows restores
show ID --json``, or the run task's result. ``run`` reports progress as a
``PROGRESS`` state (Flower), marks the restore done or failed, and finally
POSTs the restore's JSON to ``callback_url`` (retried, bounded).
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from celery import Task

from backupflows.restore import service
from backupflows.storage.service import Storage
from backupflows.tasks.app import app


def _storage() -> Storage:
    return Storage.open()


def _base_url() -> str | None:
    return os.environ.get("BACKUPFLOWS_PUBLIC_URL") or None


@app.task(name="backupflows.restore.request", bind=True)
def request(self: Task, deployment: str, destination: dict[str, Any],
            snapshot_id: int | None = None, at: str | None = None,
            selection: dict[str, Any] | None = None, callback_url: str | None = None,
            request_id: str | None = None, requester: str | None = None) -> int:
    storage = _storage()
    req = service.request(
        storage, deployment=deployment, snapshot_id=snapshot_id, at=at,
        destination=destination, selection=selection, callback_url=callback_url,
        request_id=request_id or (f"celery:{self.request.id}" if self.request.id else None),
        requester=requester)
    enqueue(storage, req.id)
    return req.id


def enqueue(storage: Storage, restore_id: int) -> str | None:
    """Queue the run of a queued restore that has no run task yet; its task id."""
    with storage.reading() as s:
        row = service.get(s, restore_id)
        if row.state != "queued" or row.task_id is not None:
            return row.task_id
    task_id = str(uuid.uuid4())
    service.set_task_id(storage, restore_id, task_id)
    run.apply_async((restore_id,), task_id=task_id)
    return task_id


@app.task(name="backupflows.restore.run", bind=True)
def run(self: Task, restore_id: int) -> dict[str, Any]:
    storage = _storage()
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def progress(meta: dict[str, Any]) -> None:
        if self.request.id:
            self.update_state(state="PROGRESS", meta=meta)

    try:
        out = service.run(storage, restore_id, owner, on_progress=progress)
    finally:
        service.notify(storage, restore_id, _base_url())
    out.pop("download", None)  # the link's token is shown by GET /restores/{id} only
    return out
