"""Restores executed by real ``backupflows worker`` processes, on the local
Redis broker + PostgreSQL catalog and on the embedded default:

- another service (a separate process with a bare Celery app knowing only
  the broker URL) sends ``backupflows.restore.request``: the restore runs
  and its directory equals the recorded state;
- ``backupflows restore --at ... --archive ... --wait`` (a subprocess) shows
  progress and ends with a verified archive;
- ``backupflows serve`` (a subprocess) takes ``POST /restores`` for a
  download, the worker runs it, the link downloads once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.result import AsyncResult

from backupflows.restore import service
from tests.plugins.services import REPO_ROOT, WorkerProcess, free_port
from tests.restore.archive_spec import read_archive
from tests.restore.conftest import build_history
from tests.restore.expect import archive_view, assert_same, expected_view, read_dump_dir
from tests.restore.test_http import TOKEN, Client
from tests.restore.world import World

pytestmark = pytest.mark.timeout(240)
CLI = [sys.executable, "-c", "from backupflows.cli import main; main()"]


class Setup:
    def __init__(self, world: World, env: dict[str, str]) -> None:
        self.world, self.env = world, env

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **self.env}
        return subprocess.run(list(args), env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO_ROOT)

    def wait(self, restore_id: int, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = service.describe(self.world.storage, restore_id)
            if out["state"] in ("done", "failed"):
                return out
            time.sleep(0.2)
        raise AssertionError(f"restore {restore_id} did not finish: {out}")


@pytest.fixture(params=["redis", "embedded"])
def setup(request: pytest.FixtureRequest, tmp_path: Path, oplog: list[bytes], data_dir: Path,
          monkeypatch: pytest.MonkeyPatch,
          celery_workers: Callable[..., WorkerProcess]) -> Iterator[Setup]:
    url = request.getfixturevalue("postgres_url") if request.param == "redis" else None
    world = build_history(tmp_path / "history", oplog, url=url)
    env = {"BACKUPFLOWS_DATA_DIR": str(data_dir), "BACKUPFLOWS_CATALOG_URL": world.url,
           "BACKUPFLOWS_STORE_DIR": str(tmp_path / "history" / "store"),
           "BACKUPFLOWS_DAEMON_ID": f"t{uuid.uuid4().hex[:8]}",
           "BACKUPFLOWS_API_TOKEN": TOKEN, "BACKUPFLOWS_LOG_LEVEL": "INFO"}
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        env.update(BACKUPFLOWS_BROKER_URL=redis_url, BACKUPFLOWS_RESULT_BACKEND=redis_url,
                   BACKUPFLOWS_BROKER_KEY_PREFIX=request.getfixturevalue("redis_prefix"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from backupflows.settings import reset_settings

    reset_settings()
    celery_workers(env, "-c", "2")
    yield Setup(world, env)
    world.head.close()


def _settings_urls() -> tuple[str, str, str]:
    from backupflows.settings import get_settings

    s = get_settings()
    return s.broker_url, s.result_backend, s.broker_key_prefix


def test_restores_run_by_real_workers(setup: Setup, tmp_path: Path) -> None:
    """One worker per set-up serves the three ways of asking (worker start-up
    and shutdown dominate the time of these tests)."""
    send_task_from_another_service(setup, tmp_path)
    cli_restore_waits_with_progress(setup, tmp_path)
    serve_takes_a_download_request(setup)


def send_task_from_another_service(setup: Setup, tmp_path: Path) -> None:
    w = setup.world
    ts = sorted(w.states)[-2]
    kwargs = {"deployment": w.name, "at": f"{ts >> 32}:{ts & 0xFFFFFFFF}",
              "destination": {"kind": "dir", "path": str(tmp_path / "out")},
              "requester": "billing", "request_id": "billing-42"}
    broker, backend, prefix = _settings_urls()
    done = setup.run(sys.executable, str(Path(__file__).with_name("other_service.py")),
                     broker, backend, prefix, json.dumps(kwargs))
    assert done.returncode == 0, done.stderr
    restore_id = json.loads(done.stdout.strip().splitlines()[-1])["restore"]
    out = setup.wait(restore_id)
    assert out["state"] == "done", out["error"]
    assert out["requester"] == "billing" and out["request_id"] == "billing-42"
    assert out["result"]["roll_forward"]["entries"] > 0
    assert_same(read_dump_dir(tmp_path / "out"), expected_view(w.states[ts]))
    from backupflows.tasks.app import create_app

    result = AsyncResult(out["task_id"], app=create_app())
    deadline = time.monotonic() + 20
    while result.state != "SUCCESS" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert result.state == "SUCCESS" and result.result["id"] == restore_id
    again = setup.run(sys.executable, str(Path(__file__).with_name("other_service.py")),
                      broker, backend, prefix, json.dumps(kwargs))
    assert json.loads(again.stdout.strip().splitlines()[-1])["restore"] == restore_id


def cli_restore_waits_with_progress(setup: Setup, tmp_path: Path) -> None:
    w = setup.world
    ts = sorted(w.states)[4]
    archive = tmp_path / "r.archive.gz"
    done = setup.run(*CLI, "restore", w.name, "--at", f"{ts >> 32}:{ts & 0xFFFFFFFF}",
                     "--archive", str(archive), "--gzip", "--wait")
    assert done.returncode == 0, done.stderr
    assert "collections" in done.stderr and "[" in done.stderr  # the progress bar
    assert "verified" in done.stdout and str(archive) in done.stdout
    assert_same(archive_view(read_archive(archive.read_bytes())), expected_view(w.states[ts]))
    listing = json.loads(setup.run(*CLI, "restores", "list", "--json").stdout)
    assert listing[0]["state"] == "done" and listing[0]["destination"]["kind"] == "archive"
    bad = setup.run(*CLI, "restore", w.name, "--at", "1:0", "--to-dir", str(tmp_path / "n"))
    assert bad.returncode != 0 and "not restorable" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def serve_takes_a_download_request(setup: Setup) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **setup.env}
    # serve logs every request: a pipe nobody reads would fill up
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port)], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        api = Client(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _, _ = api.call("GET", "/restores")
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert status == 200
        sid, ts = next(iter(setup.world.snapshots.items()))
        status, body, _ = api.call("POST", "/restores", {
            "deployment": setup.world.name, "snapshot_id": sid,
            "destination": {"kind": "download", "format": "archive"}})
        assert status == 202, body
        out = api.wait(body["id"], timeout=90)
        assert out["state"] == "done", out["error"]
        path = out["download"]["url"].split(f":{port}", 1)[1]
        status, _, raw = api.call("GET", path, token=None)
        assert status == 200
        assert_same(archive_view(read_archive(raw)), expected_view(setup.world.states[ts]))
        assert api.call("GET", path, token=None)[0] == 410
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
