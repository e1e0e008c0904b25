"""Flower against the Redis broker: the workflow's tasks show up in its HTTP
API with the job in their arguments, and long steps in a PROGRESS state whose
result carries the job, documents, bytes and slices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from backupflows.sandbox.sampledata import generate
from tests.jobs.conftest import Stack
from tests.plugins.services import REPO_ROOT, free_port

AUTH = ("ops", "flower-test-pw")
WORKFLOW = {"backupflows.source.start_sync", "backupflows.source.slice_range",
            "backupflows.head.build", "backupflows.oplog.apply_round",
            "backupflows.head.validate", "backupflows.source.oplog_round"}


@pytest.fixture
def flower(redis_stack: Stack) -> Any:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **redis_stack.env}
    log = open(redis_stack.workdir / "flower.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "backupflows.tasks.app", "flower",
         f"--port={port}", "--address=127.0.0.1", f"--basic-auth={AUTH[0]}:{AUTH[1]}"],
        env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/api/workers", auth=AUTH, timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (
            redis_stack.workdir / "flower.log").read_text()
        time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(15)
    log.close()


def _tasks(url: str) -> dict[str, dict[str, Any]]:
    answer = requests.get(f"{url}/api/tasks", params={"limit": 5000}, auth=AUTH, timeout=10)
    answer.raise_for_status()
    return answer.json()


def test_flower_lists_the_workflow_tasks_with_their_job(redis_stack: Stack, flower: str,
                                                        source_client: Any) -> None:
    stack = redis_stack
    server, client = source_client()
    generate(client, databases=("shop",), collections=("orders", "events"),
             target_bytes=3 * 1024 * 1024, seed=1)
    stack.worker(BACKUPFLOWS_SLICE_BYTES="32KiB")  # the first batch of a range makes slices
    assert requests.get(f"{flower}/api/tasks", timeout=5).status_code == 401  # auth required
    stack.cli("deployments", "add", "src", "--uri", server.uri)
    # each getMore of the agent waits 400 ms: a slice task stays in PROGRESS between batches
    server.faults.configure({"times": 200}, {"failCommands": ["getMore"], "blockConnection": True,
                                            "blockTimeMS": 400, "appName": "backupflows"})
    stack.cli("jobs", "start", "src")
    progress: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    while stack.job("src")["state"] != "routine":
        assert time.monotonic() < deadline, stack.job("src")
        for task in _tasks(flower).values():
            if task["state"] == "PROGRESS" and task.get("result"):
                progress.append({"name": task["name"], **json.loads(task["result"])})
        time.sleep(0.3)
    server.faults.configure("off", {})
    job_id = stack.job("src")["job"]
    time.sleep(2)  # the last events reach Flower
    seen: dict[str, list[Any]] = {}
    for task in _tasks(flower).values():
        if task["name"] in WORKFLOW:
            seen.setdefault(task["name"], []).append(task)
    assert set(seen) == WORKFLOW, sorted((t["name"], t["state"], t.get("args")) for t in _tasks(flower).values())[:15]
    for name, tasks in seen.items():
        assert any(str(job_id) in (t.get("args") or "") for t in tasks), (name, tasks[:2])
    slices = [p for p in progress if p["name"] == "backupflows.source.slice_range"]
    assert slices and all(p["job"] == job_id for p in slices), progress[:5]
    assert max(p["slices_done"] for p in slices) >= 1 and max(p["bytes"] for p in slices) > 0
    builds = [p for p in progress if p["name"] == "backupflows.head.build"]
    assert all(p["slices_done"] <= p["slices_total"] for p in builds)
