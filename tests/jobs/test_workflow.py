"""The backup flow end to end with real workers: a sandbox with several
databases under a continuous write load (inserts, growing updates,
replacements, deletes, DDL) reaches routine; once the load stops and the job
has caught up, ``check --against-source`` finds no difference. On the local
Redis broker + PostgreSQL catalog, and on the embedded default."""

from __future__ import annotations

import time
from typing import Any

import pytest

from backupflows.sandbox.sampledata import WriteLoad, generate
from tests.jobs.conftest import Stack

DATABASES = ("shop", "ops")
KINDS = ("orders", "events", "customers", "metrics")  # not sessions: uuid _ids hit a sandbox bug (notes/sandbox_requests.md)


def _loaded_sandbox(source_client: Any, target_bytes: int) -> tuple[Any, Any, list[str]]:
    server, client = source_client()
    generate(client, databases=DATABASES, collections=KINDS, target_bytes=target_bytes, seed=7)
    return server, client, [f"{db}.{k}" for db in DATABASES for k in KINDS]


def _sync_under_load(stack: Stack, source_client: Any, target_bytes: int, rate: float,
                     timeout: float) -> None:
    server, client, namespaces = _loaded_sandbox(source_client, target_bytes)
    stack.worker()
    stack.cli("deployments", "add", "src", "--uri", server.uri)
    with WriteLoad(client, namespaces, rate_per_s=rate, seed=3, ddl_interval=1.0) as load:
        stack.cli("jobs", "start", "src")
        row = stack.wait_state("src", "routine", timeout=timeout)
        time.sleep(3)  # routine rounds keep up with the load
    stats = load.stats
    assert stats.counts["insert"] and stats.counts["grow"] and stats.counts["replace"]
    assert stats.counts["delete"] and stats.counts["create_collection"]
    stack.wait_caught_up("src", client)
    report = stack.check("src")
    assert report["ok"], [c for c in report["collections"] if not c["equal"]]
    assert len(report["collections"]) >= len(namespaces)
    assert sum(c["head_count"] or 0 for c in report["collections"]) > 1000
    events = [e["kind"] for e in stack.events(row["job"])]
    assert events.index("sync.planned") < events.index("validate.compared")
    status = stack.cli_json("status", "src")[0]
    assert status["state"] == "routine" and status["error"] is None
    assert set(status["head_ts"]) == {"t", "i"} and set(status["oplog_ts"]) == {"t", "i"}
    assert status["lag_seconds"] is not None and status["lag_seconds"] < 30


def test_sync_under_write_load_reaches_routine_with_no_difference(
        stack: Stack, source_client: Any) -> None:
    _sync_under_load(stack, source_client, target_bytes=3 * 1024 * 1024, rate=150, timeout=150)


@pytest.mark.soak
def test_sync_of_50mb_under_write_load(stack: Stack, source_client: Any) -> None:
    _sync_under_load(stack, source_client, target_bytes=55 * 1024 * 1024, rate=300,
                     timeout=900)
