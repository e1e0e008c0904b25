"""Fixtures of the backup-job workflow tests: real workers, real brokers.

``stack`` gives a ``Stack``: the environment of one set-up (the local Redis
broker + a PostgreSQL catalog of its own, or the embedded default: SQLite
broker, results and catalog in a data dir), a migrated catalog, the same
settings in this process (so the test reads the catalog directly), helpers
to run the ``backupflows`` command line as a subprocess and to start real
``backupflows worker -B`` processes (beat embedded: the dispatchers run).
Limits are shrunk so multi-slice, multi-segment, lease-expiry and
reconcile paths run on small data in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from bson.timestamp import Timestamp

from tests.plugins.services import REPO_ROOT, WorkerProcess

CLI = [sys.executable, "-c", "from backupflows.cli import main; main()"]
FAST = {
    "BACKUPFLOWS_LEASE_SECONDS": "6",
    "BACKUPFLOWS_OPLOG_ROUND_SECONDS": "1",
    "BACKUPFLOWS_OPLOG_INTERVAL": "1",
    "BACKUPFLOWS_APPLY_INTERVAL": "1",
    "BACKUPFLOWS_RECONCILE_INTERVAL": "2",
    "BACKUPFLOWS_REQUEUE_SECONDS": "15",
    "BACKUPFLOWS_SLICE_BYTES": "256KiB",
    "BACKUPFLOWS_VISIBILITY_TIMEOUT": "20",
    "BACKUPFLOWS_SOURCE_TIMEOUT": "3",
    "BACKUPFLOWS_LOG_LEVEL": "INFO",
}


class Stack:
    """One broker/catalog set-up with its workers and command line."""

    def __init__(self, env: dict[str, str], workdir: Path,
                 start_worker: Callable[..., WorkerProcess]) -> None:
        self.env = env
        self.workdir = workdir
        self._start_worker = start_worker
        self.workers: list[WorkerProcess] = []
        self.redis: Any = None

    # -- processes -------------------------------------------------------------------
    def worker(self, *args: str, concurrency: int = 2, **env: str) -> WorkerProcess:
        """A ``backupflows worker -B`` (all queues, beat embedded), ready."""
        beat = self.workdir / f"beat-{len(self.workers)}"
        w = self._start_worker({**self.env, **env}, "-c", str(concurrency), "-B", "-s",
                               str(beat), *args, timeout=60)
        self.workers.append(w)
        return w

    def cli(self, *args: str, check: bool = True, timeout: float = 120,
            **env: str) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **self.env, **env}
        done = subprocess.run([*CLI, *args], env=full, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO_ROOT)
        if check and done.returncode != 0:
            raise AssertionError(f"backupflows {' '.join(args)} -> {done.returncode}\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    # -- catalog -----------------------------------------------------------------------
    def job(self, name: str) -> dict[str, Any]:
        from backupflows.jobs.status import status_rows

        return status_rows(name)[0]

    def events(self, job_id: int, *kinds: str) -> list[dict[str, Any]]:
        from backupflows.jobs.status import job_events

        return job_events(job_id, kinds)

    def wait_state(self, name: str, state: str, timeout: float = 90, *,
                   generation: int | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        row: dict[str, Any] = {}
        while time.monotonic() < deadline:
            row = self.job(name)
            if row["state"] == state and (generation is None or row["generation"] >= generation):
                return row
            if row["state"] == "failed":
                break
            time.sleep(0.3)
        raise AssertionError(f"job of {name} not {state} within {timeout}s: {row}\n"
                             f"events: {self._events_text(row)}\n{self.logs()}")

    def wait_caught_up(self, name: str, client: pymongo.MongoClient, timeout: float = 60) -> None:
        """Until the head has applied the source's newest oplog entry."""
        newest = newest_ts(client)
        deadline = time.monotonic() + timeout
        row: dict[str, Any] = {}
        while time.monotonic() < deadline:
            row = self.job(name)
            head = row["head_ts"]
            if head and Timestamp(head["t"], head["i"]) >= newest:
                return
            time.sleep(0.3)
        raise AssertionError(f"head of {name} not at {newest} within {timeout}s: {row}\n"
                             f"{self.logs()}")

    def check(self, name: str) -> dict[str, Any]:
        done = self.cli("check", name, "--against-source", "--json", check=False)
        assert done.returncode in (0, 1), done.stderr
        return json.loads(done.stdout)

    def _events_text(self, row: dict[str, Any]) -> str:
        if not row.get("job"):
            return "-"
        return "\n".join(f"  {e['kind']}: {e['message']}" for e in self.events(row["job"]))

    def logs(self, tail: int = 60) -> str:
        out = []
        for i, w in enumerate(self.workers):
            lines = w.log().splitlines()
            keep = [ln for ln in lines if "ERROR" in ln or "Traceback" in ln or "Error" in ln]
            out.append(f"--- worker {i} (errors) ---\n" + "\n".join(keep[-tail:]))
        return "\n".join(out)


def newest_ts(client: pymongo.MongoClient) -> Timestamp:
    doc = client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])
    assert doc is not None
    return doc["ts"]


def _in_process(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    from backupflows.catalog.db import dispose_engines
    from backupflows.jobs import resources
    from backupflows.jobs.config import job_config
    from backupflows.settings import reset_settings

    for name in list(os.environ):
        if name.startswith("BACKUPFLOWS_") and not name.startswith("BACKUPFLOWS_TEST_"):
            monkeypatch.delenv(name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings()
    job_config.cache_clear()
    dispose_engines(close=True)
    resources.reset()


@pytest.fixture(params=["redis", "embedded"])
def stack(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          celery_workers: Callable[..., WorkerProcess]) -> Iterator[Stack]:
    """The flow on Redis + PostgreSQL, and on the embedded default."""
    yield from _stack(request, request.param, tmp_path, monkeypatch, celery_workers)


@pytest.fixture
def redis_stack(request: pytest.FixtureRequest, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch,
                celery_workers: Callable[..., WorkerProcess]) -> Iterator[Stack]:
    yield from _stack(request, "redis", tmp_path, monkeypatch, celery_workers)


@pytest.fixture
def private_redis_stack(request: pytest.FixtureRequest, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch,
                        celery_workers: Callable[..., WorkerProcess]) -> Iterator[Stack]:
    """Broker and results on a redis-server of the test's own (``stack.redis``), SQLite
    catalog."""
    for stack in _stack(request, "private_redis", tmp_path, monkeypatch, celery_workers):
        stack.redis = request.node.private_redis_server
        yield stack


@pytest.fixture
def embedded_stack(request: pytest.FixtureRequest, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch,
                   celery_workers: Callable[..., WorkerProcess]) -> Iterator[Stack]:
    yield from _stack(request, "embedded", tmp_path, monkeypatch, celery_workers)


def _stack(request: pytest.FixtureRequest, kind: str, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch,
           celery_workers: Callable[..., WorkerProcess]) -> Iterator[Stack]:
    env = {**FAST, "BACKUPFLOWS_DATA_DIR": str(tmp_path / "data"),
           "BACKUPFLOWS_DAEMON_ID": f"t{uuid.uuid4().hex[:8]}"}
    if kind == "redis":
        redis_url = request.getfixturevalue("redis_url")
        env.update(BACKUPFLOWS_BROKER_URL=redis_url, BACKUPFLOWS_RESULT_BACKEND=redis_url,
                   BACKUPFLOWS_BROKER_KEY_PREFIX=request.getfixturevalue("redis_prefix"),
                   BACKUPFLOWS_CATALOG_URL=request.getfixturevalue("postgres_url"))
    elif kind == "private_redis":  # a redis-server of the test's own (it gets restarted)
        server = request.getfixturevalue("private_redis")()
        env.update(BACKUPFLOWS_BROKER_URL=server.url, BACKUPFLOWS_RESULT_BACKEND=server.url)
        request.node.private_redis_server = server
    _in_process(monkeypatch, env)
    from backupflows.catalog import migrate

    migrate.upgrade()
    stack = Stack(env, tmp_path, celery_workers)
    yield stack
    for worker in stack.workers:
        # kill -9: SIGTERM to the whole process group can leave a billiard pool child
        # deadlocked on the result queue lock, and the warm shutdown waits 15 s for it
        if worker.proc.poll() is None:
            worker.kill()
    from backupflows.catalog.db import dispose_engines

    dispose_engines(close=True)


@pytest.fixture
def source_client(make_sandbox: Callable[..., Any]) -> Callable[..., tuple[Any, pymongo.MongoClient]]:
    """Factory: a sandbox (kwargs for SandboxServer) and a client of it."""
    clients: list[pymongo.MongoClient] = []

    def start(**kwargs: Any) -> tuple[Any, pymongo.MongoClient]:
        kwargs.setdefault("noop_interval", 3600.0)
        server = make_sandbox(**kwargs)
        client: pymongo.MongoClient = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10000)
        clients.append(client)
        return server, client

    yield start
    for client in clients:
        client.close()
