"""Bad input: one clear line on stderr, a non-zero exit, never a password, and
nothing stored or changed by the failed command (or, when the source is
checked by the workers, the job ``failed`` with the reason)."""

from __future__ import annotations

import socket
from typing import Any

from tests.jobs.conftest import Stack
from tests.source.standalone import StandaloneServer

SECRET = "s3cr3t-Pw"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _one_line_error(done: Any, *needles: str) -> str:
    assert done.returncode != 0, done.stdout
    err = done.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    assert SECRET not in err and SECRET not in done.stdout
    for needle in needles:
        assert needle in err, err
    return err


def test_bad_input_gives_one_clear_error_and_changes_nothing(embedded_stack: Stack,
                                                             source_client: Any) -> None:
    stack = embedded_stack
    server, client = source_client()
    client.app.items.insert_many([{"_id": i} for i in range(10)])
    good = server.uri
    with_password = server.uri.replace("mongodb://", f"mongodb://backup:{SECRET}@")

    # a wrong URI is refused when the deployment is added
    _one_line_error(stack.cli("deployments", "add", "x", "--uri",
                              f"mongodb://backup:{SECRET}@host:notaport/", check=False),
                    "bad URI", "backup:***@")
    _one_line_error(stack.cli("deployments", "add", "x", "--uri", "localhost:27017",
                              check=False), "expected mongodb://")
    _one_line_error(stack.cli("deployments", "add", "x", "--uri", good, "--include", "local",
                              check=False), "internal namespace")
    assert stack.cli_json("deployments", "list") == []

    # unreachable source, not a replica set, a filter that matches nothing
    standalone = StandaloneServer()
    try:
        stack.cli("deployments", "add", "down", "--uri",
                  f"mongodb://backup:{SECRET}@127.0.0.1:{_closed_port()}/?replicaSet=rs0")
        stack.cli("deployments", "add", "single", "--uri", standalone.uri)
        stack.cli("deployments", "add", "nothing", "--uri", good, "--include", "nosuchdb")
        stack.cli("deployments", "add", "denied", "--uri", with_password)
        _one_line_error(stack.cli("jobs", "start", "denied", check=False),
                        "authentication failed", "backup:***@")
        _one_line_error(stack.cli("jobs", "start", "down", check=False), "cannot reach",
                        "backup:***@")
        _one_line_error(stack.cli("jobs", "start", "single", check=False),
                        "is not a replica set")
        _one_line_error(stack.cli("jobs", "start", "nothing", check=False),
                        "matches nothing", "nosuchdb")
    finally:
        standalone.stop()
    assert {r["deployment"]: r["state"] for r in stack.cli_json("status")} == {
        "down": None, "single": None, "nothing": None, "denied": None}
    listed = stack.cli_json("deployments", "list")
    assert all(SECRET not in r["uri"] for r in listed) and len(listed) == 4

    # a second start of a running job is a conflict and leaves the job alone
    stack.cli("deployments", "add", "src", "--uri", good)
    first = stack.cli("jobs", "start", "src")
    assert "initial sync started" in first.stdout
    before = stack.job("src")
    _one_line_error(stack.cli("jobs", "start", "src", check=False), "already running",
                    "jobs resync src")
    after = stack.job("src")
    assert (after["job"], after["state"], after["generation"]) == (
        before["job"], "initial_sync", 1)
    assert [e["kind"] for e in stack.events(after["job"])] == ["job.created", "sync.started"]
    _one_line_error(stack.cli("jobs", "stop", "nobody", check=False), "no deployment named")
    _one_line_error(stack.cli("check", "src", "--against-source", check=False),
                    "has no head to check (state initial_sync)")


def test_unreachable_source_without_the_check_fails_the_job(embedded_stack: Stack) -> None:
    """``jobs start --no-check``: the agent retries, then the job is failed
    with the reason (and the password is not in it)."""
    stack = embedded_stack
    stack.worker(BACKUPFLOWS_SOURCE_RETRIES="1")
    stack.cli("deployments", "add", "down", "--uri",
              f"mongodb://backup:{SECRET}@127.0.0.1:{_closed_port()}/?replicaSet=rs0")
    stack.cli("jobs", "start", "down", "--no-check")
    row = stack.wait_state("down", "failed", timeout=90)
    assert "cannot reach" in row["error"] and SECRET not in row["error"]
    assert "backup:***@" in row["error"]
    failed = stack.events(row["job"], "job.state")[-1]
    assert failed["data"]["to"] == "failed" and SECRET not in failed["message"]
    assert SECRET not in stack.cli("status", "down").stdout
