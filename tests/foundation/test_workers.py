"""Real ``backupflows worker`` subprocesses on the local Redis and on the embedded broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from backupflows import __version__
from backupflows.settings import load_settings
from backupflows.tasks.app import create_app
from tests.plugins.services import WorkerProcess

TEST_TASKS = ("-I", "tests.foundation.worker_tasks")
Workers = Callable[..., WorkerProcess]


def _daemon_id() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def _client(env: dict[str, str]) -> Celery:
    return create_app(load_settings(env))


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _ping(app: Celery, **options: Any) -> dict[str, Any]:
    result = app.send_task("backupflows.system.ping", **options)
    return result.get(timeout=30)


@pytest.fixture
def redis_env(redis_url: str, redis_prefix: str, tmp_path: Path) -> dict[str, str]:
    return {
        "BACKUPFLOWS_DATA_DIR": str(tmp_path / "data"),
        "BACKUPFLOWS_BROKER_URL": redis_url,
        "BACKUPFLOWS_RESULT_BACKEND": redis_url,
        "BACKUPFLOWS_BROKER_KEY_PREFIX": redis_prefix,
    }


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    return {"BACKUPFLOWS_DATA_DIR": str(tmp_path / "data")}


@pytest.mark.redis
def test_ping_on_redis_reaches_each_daemons_own_queue(redis_env: dict[str, str],
                                                      celery_workers: Workers) -> None:
    ids = [_daemon_id(), _daemon_id()]
    for daemon_id in ids:  # each worker consumes only its own daemon queue
        celery_workers({**redis_env, "BACKUPFLOWS_DAEMON_ID": daemon_id},
                       "-Q", f"daemon.{daemon_id}", "-c", "1", ready=False)
    app = _client(redis_env)
    for daemon_id in reversed(ids):
        answer = _ping(app, queue=f"daemon.{daemon_id}")
        assert answer["daemon_id"] == daemon_id and answer["version"] == __version__


@pytest.mark.redis
def test_ping_on_redis_by_routing_with_default_queues(redis_env: dict[str, str],
                                                      celery_workers: Workers) -> None:
    daemon_id = _daemon_id()
    celery_workers({**redis_env, "BACKUPFLOWS_DAEMON_ID": daemon_id}, "-c", "1")
    assert _ping(_client(redis_env))["daemon_id"] == daemon_id  # routed to 'daemon'


def test_ping_on_the_embedded_broker(embedded_env: dict[str, str],
                                     celery_workers: Workers) -> None:
    daemon_id = _daemon_id()
    celery_workers({**embedded_env, "BACKUPFLOWS_DAEMON_ID": daemon_id}, "-c", "1")
    app = _client(embedded_env)
    assert _ping(app)["daemon_id"] == daemon_id
    assert _ping(app, queue=f"daemon.{daemon_id}")["daemon_id"] == daemon_id


def test_embedded_broker_redelivers_after_the_whole_worker_is_killed(
    embedded_env: dict[str, str], celery_workers: Workers, tmp_path: Path
) -> None:
    """kill -9 of the worker (main process and pool) mid-task: the unacked task
    becomes visible again after the visibility timeout and a new worker runs it."""
    env = {**embedded_env, "BACKUPFLOWS_VISIBILITY_TIMEOUT": "3"}
    marks = tmp_path / "marks"
    first = celery_workers(env, "-c", "1", *TEST_TASKS)
    result = _client(env).send_task("backupflows.testing.mark_and_sleep", (str(marks), 2.0))
    _wait_for(lambda: marks.exists() and "start" in marks.read_text(), 20, "the task to start")
    first.kill()
    celery_workers(env, "-c", "1", *TEST_TASKS)
    second_pid = result.get(timeout=30)
    lines = marks.read_text().split()
    assert lines.count("start") == 2 and lines.count("done") == 1
    assert lines[-1] == str(second_pid)


def test_embedded_broker_requeues_at_once_when_a_pool_process_dies(
    embedded_env: dict[str, str], celery_workers: Workers, tmp_path: Path
) -> None:
    """kill -9 of the pool process only: reject_on_worker_lost requeues the task
    immediately (long before the 3600 s visibility timeout)."""
    marks = tmp_path / "marks"
    worker = celery_workers(embedded_env, "-c", "1", *TEST_TASKS)
    result = _client(embedded_env).send_task("backupflows.testing.mark_and_sleep",
                                             (str(marks), 1.0))
    _wait_for(lambda: marks.exists() and "start" in marks.read_text(), 20, "the task to start")
    victim = int(marks.read_text().split()[1])
    import os
    import signal

    os.kill(victim, signal.SIGKILL)  # a pool child of the worker we started
    pid = result.get(timeout=30)
    assert pid != victim
    lines = marks.read_text().split()
    assert lines.count("start") == 2 and lines.count("done") == 1
    assert worker.proc.poll() is None


@pytest.mark.redis
def test_worker_survives_a_broker_restart(private_redis: Callable[..., Any],
                                          celery_workers: Workers, tmp_path: Path) -> None:
    """Redis (our own redis-server) restarted under a running worker: it reconnects."""
    server = private_redis()
    env = {"BACKUPFLOWS_DATA_DIR": str(tmp_path / "data"),
           "BACKUPFLOWS_BROKER_URL": server.url, "BACKUPFLOWS_RESULT_BACKEND": server.url,
           "BACKUPFLOWS_DAEMON_ID": _daemon_id()}
    worker = celery_workers(env, "-c", "1")
    assert _ping(_client(env))["daemon_id"] == env["BACKUPFLOWS_DAEMON_ID"]
    server.restart()  # no persistence: queues are empty again, as after a crash
    answer = _ping(_client(env))
    assert answer["daemon_id"] == env["BACKUPFLOWS_DAEMON_ID"]
    assert worker.proc.poll() is None
