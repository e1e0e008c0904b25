"""Per-process resources of job work: source clients, the object store, head paths.

One ``MongoClient`` per source URI and one object store backend per process,
created on first use (after a fork: Celery's prefork children never share
the parent's sockets, the caches are emptied in the child). Object names:

- slices: ``slices/job-<id>/g<generation>/r<range id>/<seq:06d>``: a rewrite
  of the same slice replaces the object, never duplicates it;
- oplog segments: ``oplog/job-<id>/g<generation>/<after ts:016x>-<last ts:016x>``:
  the name says which entries it holds, so a repeated round writes the same
  object.

The head of a job lives at ``<heads_dir>/<job id>-<generation>.head`` on the
daemon whose id is stored on the job.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pymongo import MongoClient

from backupflows.jobs.config import job_config
from backupflows.settings import get_settings
from backupflows.source.client import connect
from backupflows.storage.backends import Backend, open_backend

_lock = threading.Lock()
_clients: dict[str, MongoClient] = {}
_store: list[Backend] = []


def source_client(uri: str) -> MongoClient:
    """This process's client of the source at ``uri`` (pinged when created)."""
    with _lock:
        client = _clients.get(uri)
    if client is not None:
        return client
    client = connect(uri, timeout_s=job_config().source_timeout)
    with _lock:
        existing = _clients.setdefault(uri, client)
    if existing is not client:
        client.close()
    return existing


def object_store() -> Backend:
    """The object store of slices and oplog segments (``BACKUPFLOWS_STORE_URL``: a path,
    ``file:///path`` or ``s3://bucket/prefix?endpoint_url=...``; default the
    ``BACKUPFLOWS_STORE_DIR`` directory)."""
    with _lock:
        if not _store:
            settings = get_settings()
            if "://" not in settings.store_url:
                Path(settings.store_url).mkdir(parents=True, exist_ok=True)
            _store.append(open_backend(settings.store_url))
        return _store[0]


def slice_name(job_id: int, generation: int, range_id: int, seq: int) -> str:
    return f"{slices_prefix(job_id, generation)}r{range_id}/{seq:06d}"


def slices_prefix(job_id: int, generation: int | None = None) -> str:
    return f"slices/job-{job_id}/" + (f"g{generation}/" if generation is not None else "")


def segment_name(job_id: int, generation: int, after_ts: int, last_ts: int) -> str:
    return f"{segments_prefix(job_id, generation)}{after_ts:016x}-{last_ts:016x}"


def segments_prefix(job_id: int, generation: int | None = None) -> str:
    return f"oplog/job-{job_id}/" + (f"g{generation}/" if generation is not None else "")


def head_path(job_id: int, generation: int) -> Path:
    """Where this daemon keeps the head of ``job_id`` at ``generation``."""
    heads = get_settings().heads_dir
    heads.mkdir(parents=True, exist_ok=True)
    return heads / f"{job_id}-{generation}.head"


def head_files(job_id: int) -> list[Path]:
    """Every head file (and its SQLite companions) of ``job_id`` on this daemon."""
    heads = get_settings().heads_dir
    if not heads.is_dir():
        return []
    return sorted(heads.glob(f"{job_id}-*.head*"))


def reset() -> None:
    """Forget the cached clients and store (after a fork, or in tests)."""
    global _lock
    _lock = threading.Lock()
    _clients.clear()
    _store.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reset)
