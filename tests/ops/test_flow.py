"""The operator's commands on a real flow: a sandbox job reaches routine with
real workers (embedded broker, beat embedded), a second deployment whose
password is refused fails; the beat dispatcher opens its alert, posts it to
a local webhook and daemons report. ``status``, ``events`` (also
``--follow``), ``alerts`` in both outputs, ``status --watch``, ``serve``'s
``/metrics``; every log line is JSON and no password or API token is in any
output or log."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from backupflows.catalog.db import session_scope
from backupflows.catalog.ops_models import DaemonHeartbeat
from tests.jobs.conftest import CLI, Stack
from tests.plugins.services import REPO_ROOT, free_port

SECRET = "Flow-Pa55word-xyz"
TOKEN = "flow-api-token-0123456789"


class Hook(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        Hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _until(what: str, fn: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout}s: {what}")


def _popen(stack: Stack, *args: str, **env: str) -> subprocess.Popen[str]:
    full = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **stack.env, **env}
    return subprocess.Popen([*CLI, *args], env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    proc.terminate()
    try:
        return proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


@pytest.fixture
def hook() -> Any:
    Hook.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def test_operator_commands_on_a_real_flow(embedded_stack: Stack, source_client: Any,
                                          hook: str) -> None:
    stack = embedded_stack
    stack.env.update(BACKUPFLOWS_LOG_JSON="1", BACKUPFLOWS_API_TOKEN=TOKEN)
    outputs: list[str] = []
    server, client = source_client()
    client.app.items.insert_many([{"_id": i, "v": "x" * 100} for i in range(500)])
    worker = stack.worker(BACKUPFLOWS_ALERT_INTERVAL="2", BACKUPFLOWS_SOURCE_RETRIES="1",
                          BACKUPFLOWS_ALERT_WEBHOOK_URL=hook)
    stack.cli("deployments", "add", "src", "--uri", server.uri)
    stack.cli("deployments", "add", "denied", "--uri",
              server.uri.replace("mongodb://", f"mongodb://backup:{SECRET}@"))
    stack.cli("jobs", "start", "src")
    stack.wait_state("src", "routine", timeout=120)
    stack.cli("jobs", "start", "denied", "--no-check")
    stack.wait_state("denied", "failed", timeout=90)
    client.app.items.insert_many([{"_id": 1000 + i} for i in range(20)])
    stack.wait_caught_up("src", client)
    took = stack.cli("snapshots", "take", "src", "--wait", timeout=120)
    outputs += [took.stdout, took.stderr]

    # the beat dispatcher: alert opened, webhook posted, the daemon reported
    alerts = _until("job_failed alert", lambda: stack.cli_json("alerts"))
    assert [(a["kind"], a["deployment"]) for a in alerts] == [("job_failed", "denied")]
    assert SECRET not in json.dumps(alerts) and "backup:***@" in alerts[0]["message"]
    _until("webhook delivery", lambda: Hook.bodies)
    assert Hook.bodies[0]["event"] == "opened" and Hook.bodies[0]["alert"]["id"] == alerts[0]["id"]
    with session_scope(readonly=True) as s:
        beat = _until("heartbeat", lambda: s.scalar(select(DaemonHeartbeat)))
        assert beat.daemon_id == stack.env["BACKUPFLOWS_DAEMON_ID"] and beat.disk_free > 0
    text = stack.cli("alerts").stdout
    assert "job_failed" in text and "denied" in text
    outputs.append(text)

    # status: both outputs
    rows = {r["deployment"]: r for r in stack.cli_json("status")}
    src = rows["src"]
    assert src["state"] == "routine" and src["lag_seconds"] is not None
    assert src["last_snapshot"]["id"] >= 1 and src["open_alerts"] == []
    assert src["storage"]["oplog_bytes"] > 0 and src["storage"]["snapshot_bytes_stored"] > 0
    assert src["pit_window"] is not None and src["next_snapshot_due"] is not None
    assert src["head_time"] is not None
    assert [a["kind"] for a in rows["denied"]["open_alerts"]] == ["job_failed"]
    text = stack.cli("status").stdout
    assert "routine" in text and "ALERT denied: [job_failed]" in text
    outputs.append(text + json.dumps(rows))

    # events: both outputs, and --follow printing a new line as it happens
    kinds = [e["kind"] for e in stack.cli_json("events", "src")]
    for kind in ("job.created", "sync.planned", "validate.compared", "job.state",
                 "snapshot.taken"):
        assert kind in kinds, kinds
    assert "alert.opened" in [e["kind"] for e in stack.cli_json("events", "denied")]
    text = stack.cli("events", "src").stdout
    assert "snapshot.taken" in text
    outputs.append(text)
    follow = _popen(stack, "events", "src", "--follow", "--json", "--interval", "0.3")
    time.sleep(3)
    stack.cli("jobs", "stop", "src")
    time.sleep(3)
    out, err = _stop(follow)
    outputs += [out, err]
    followed = [json.loads(line) for line in out.splitlines()]
    assert followed[-1]["kind"] == "job.state" and "stopped" in followed[-1]["message"]
    assert len({(f["at"], f["kind"], f["message"]) for f in followed}) == len(followed)

    # status --watch refreshes
    watch = _popen(stack, "status", "--watch", "--interval", "0.5")
    time.sleep(4)
    out, err = _stop(watch)
    outputs += [out, err]
    assert out.count("backupflows status") >= 2  # frames (the screen clear only on a tty)
    assert out.count("ALERT denied: [job_failed]") >= 2

    # serve: /metrics with the token; JSON log lines
    port = free_port()
    serve = _popen(stack, "serve", "--port", str(port))
    try:
        def scrape() -> str | None:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    return resp.read().decode()
            except OSError:
                return None
        text = _until("serve up", scrape, timeout=30)
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        assert samples[("backupflows_job_state", (("deployment", "src"),
                                                  ("state", "stopped")))] == 1
        assert samples[("backupflows_open_alerts", (("kind", "job_failed"),))] == 1
        assert samples[("backupflows_snapshots", (("deployment", "src"),))] >= 1
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/restores",
                headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}), timeout=5)
    finally:
        out, err = _stop(serve)
    outputs += [out, err]
    served = [json.loads(line) for line in err.splitlines() if line.strip()
              and not line.startswith("backupflows serve:")]
    assert any("/metrics" in line["message"] for line in served)

    # logs: JSON lines, and no password or token anywhere
    worker_log = worker.log()
    json_lines = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    assert any(line["message"].startswith("alert opened: [job_failed]") for line in json_lines)
    for text in [worker_log, *outputs]:
        assert SECRET not in text and TOKEN not in text
