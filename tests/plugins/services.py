"""Fixtures: Redis, PostgreSQL, a private redis-server, the data dir, Celery workers.

Shared services are never flushed, stopped or reconfigured: Redis tests get
their own key prefix (``redis_prefix``; only keys under it are deleted), and
PostgreSQL tests their own database (``bf_test_<random>``, dropped after).
A service that is down skips its tests locally and FAILS them when CI=true.
A test that must restart a broker uses ``private_redis`` (its own
redis-server on a free port). ``celery_workers`` starts real ``backupflows
worker`` subprocesses and stops them at teardown.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_ADMIN_URL = os.environ.get(
    "BACKUPFLOWS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def service_unavailable(what: str) -> None:
    """Skip the test, or fail it when CI=true (CI must run every test)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI=true: services must be available)")
    pytest.skip(what)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------- Redis
@pytest.fixture(scope="session")
def redis_url() -> str:
    """``redis://127.0.0.1:6379/0`` if that Redis answers PING (else skip/fail)."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis at {REDIS_HOST}:{REDIS_PORT} is not reachable: {exc}")
    finally:
        client.close()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix; only keys under it are deleted afterwards (never FLUSH)."""
    import redis

    prefix = f"bftest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
    finally:
        client.close()


class PrivateRedis:
    """A redis-server of our own on a free port: start, stop, kill, restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            service_unavailable("redis-server binary not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, timeout, self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> PrivateRedis:
        self.stop()
        return self.start()


def _wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not listen on {port} within {timeout}s")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[], PrivateRedis]]:
    """Factory: ``private_redis()`` starts a new redis-server; all stop at teardown."""
    servers: list[PrivateRedis] = []

    def start() -> PrivateRedis:
        server = PrivateRedis(tmp_path / f"redis-{len(servers)}")
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


# ---------------------------------------------------------------- PostgreSQL
@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database ``bf_test_<random>`` on the local server, dropped afterwards."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        service_unavailable(f"psycopg not installed: {exc}")
    name = f"bf_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_connect(psycopg)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        from backupflows.catalog.db import dispose_engines

        dispose_engines(close=True)
        with _admin_connect(psycopg) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin_connect(psycopg):  # type: ignore[no-untyped-def]
    try:
        return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=2)
    except psycopg.OperationalError as exc:
        service_unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc}")


# ------------------------------------------------------------------ data dir
@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty data dir; every other BACKUPFLOWS_* variable unset; settings reset."""
    from backupflows.catalog.db import dispose_engines
    from backupflows.settings import reset_settings

    for name in list(os.environ):
        if name.startswith("BACKUPFLOWS_") and not name.startswith("BACKUPFLOWS_TEST_"):
            monkeypatch.delenv(name)
    path = tmp_path / "data"
    monkeypatch.setenv("BACKUPFLOWS_DATA_DIR", str(path))
    reset_settings()
    yield path
    dispose_engines(close=True)
    reset_settings()


# ------------------------------------------------------------- Celery workers
class WorkerProcess:
    """One ``backupflows worker`` subprocess in its own process group."""

    def __init__(self, env: Mapping[str, str], args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from backupflows.cli import main; main()", "worker", *args],
            env=dict(env), cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        """Wait for Celery's ``ready.`` line; raise with the log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()}")

    def pool_pids(self) -> list[int]:
        """PIDs of the worker's pool processes (children of the main process)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except FileNotFoundError:
            return []

    def kill(self) -> None:
        """``kill -9`` the whole worker (main process and pool), as a crash would."""
        self._signal_group(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(10)
        self._signal_group(signal.SIGKILL)  # orphaned pool children, if any
        self._log.close()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the group of the process we started
        except ProcessLookupError:
            pass


@pytest.fixture
def celery_workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: ``celery_workers(env, "-Q", "daemon", "-c", "1")`` -> a ready worker.

    ``env`` holds BACKUPFLOWS_* settings (broker, backend, data dir, daemon id);
    it is laid over the current environment. Every worker stops at teardown.
    """
    workers: list[WorkerProcess] = []

    def start(env: Mapping[str, str], *args: str, ready: bool = True,
              timeout: float = 30.0) -> WorkerProcess:
        full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}
        log = tmp_path / f"worker-{len(workers)}.log"
        worker = WorkerProcess(full_env, list(args), log)
        workers.append(worker)
        return worker.wait_ready(timeout) if ready else worker

    yield start
    for worker in workers:
        worker.stop()
