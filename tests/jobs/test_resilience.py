"""The job survives its surroundings: a broker restarted mid-workflow, a source
that drops connections and fails commands while it is sliced and tailed, and
an oplog that rolls over during the initial sync (resync_required, then an
automatic new initial sync)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymongo

from backupflows.sandbox.sampledata import WriteLoad, generate
from tests.jobs.conftest import Stack

KINDS = ("orders", "events", "customers", "metrics")  # not sessions: sandbox_requests.md
NAMESPACES = [f"{db}.{k}" for db in ("shop", "ops") for k in KINDS]


def _sandbox(source_client: Any, target_bytes: int, **kwargs: Any) -> tuple[Any, Any]:
    server, client = source_client(**kwargs)
    generate(client, databases=("shop", "ops"), collections=KINDS, target_bytes=target_bytes,
             seed=5)
    return server, client


def _finish_and_compare(stack: Stack, client: Any, timeout: float = 180) -> dict[str, Any]:
    row = stack.wait_state("src", "routine", timeout=timeout)
    stack.wait_caught_up("src", client)
    report = stack.check("src")
    assert report["ok"], [c for c in report["collections"] if not c["equal"]]
    return row


def test_redis_restarted_mid_workflow(private_redis_stack: Stack, source_client: Any) -> None:
    """The broker loses every queued message, the chord and the results while
    ranges are being sliced: the reconcile dispatcher queues the work again."""
    stack = private_redis_stack
    server, client = _sandbox(source_client, 4 * 1024 * 1024)
    server.set_latency(30)
    stack.worker(concurrency=1)
    stack.cli("deployments", "add", "src", "--uri", server.uri)
    with WriteLoad(client, NAMESPACES, rate_per_s=80, seed=1):
        stack.cli("jobs", "start", "src")
        deadline = time.monotonic() + 60
        while not _mid_slicing(stack.job("src")):
            assert time.monotonic() < deadline, stack.job("src")
            time.sleep(0.02)
        stack.redis.restart()  # no persistence: queues, chord counters and results are gone
        before = stack.job("src")
        assert before["state"] == "initial_sync"
        assert before["progress"]["ranges_done"] < before["progress"]["ranges_total"]
        server.set_latency(0)
        row = stack.wait_state("src", "routine", timeout=120)
    assert stack.workers[0].proc.poll() is None  # the same worker reconnected
    _finish_and_compare(stack, client)
    kinds = [e["kind"] for e in stack.events(row["job"])]
    assert kinds.count("sync.planned") == 1  # resumed, not restarted from scratch


def _mid_slicing(row: dict[str, Any]) -> bool:
    p = row["progress"] or {}
    return row["state"] == "initial_sync" and 0 < p.get("ranges_done", 0) < p.get(
        "ranges_total", 0)


@contextmanager
def _flaky_source(server: Any) -> Iterator[dict[str, int]]:
    """Drop every connection and fail reads now and then, in a thread."""
    fired = {"closed": 0, "failed": 0}
    stop = threading.Event()

    def chaos() -> None:
        n = 0
        while not stop.wait(0.4):
            n += 1
            if n % 2:
                fired["closed"] += server.close_all_connections()
            else:
                fired["failed"] += server.faults.configure(
                    {"times": 2}, {"failCommands": ["find", "getMore", "aggregate"],
                                   "errorCode": 91, "appName": "backupflows"})
    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    try:
        yield fired
    finally:
        stop.set()
        thread.join()
        fired["failed"] += server.faults.configure("off", {})


def test_source_dropping_connections_and_failing_reads(redis_stack: Stack,
                                                       source_client: Any) -> None:
    """Slicing and tailing retry through dropped connections and failed
    find/getMore (ShutdownInProgress); the job is never failed."""
    stack = redis_stack
    server, client = _sandbox(source_client, 3 * 1024 * 1024)
    server.set_latency(2)
    stack.worker()
    stack.cli("deployments", "add", "src", "--uri", server.uri)
    with WriteLoad(client, NAMESPACES, rate_per_s=80, seed=2):
        stack.cli("jobs", "start", "src")
        time.sleep(0.5)
        with _flaky_source(server) as fired:
            stack.wait_state("src", "routine", timeout=180)
            time.sleep(4)  # routine tailing under the same faults
        server.set_latency(0)
    assert fired["closed"] > 0 and fired["failed"] > 0, fired
    row = _finish_and_compare(stack, client)
    assert "failed" not in [e["data"].get("to") for e in stack.events(row["job"], "job.state")]


def _heavy_writes(client: pymongo.MongoClient, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        coll = client.shop.heavy
        n = 0
        while not stop.is_set():
            coll.insert_many([{"_id": n + i, "pad": "x" * 2000} for i in range(50)])
            n += 50
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_oplog_rollover_during_initial_sync_resyncs_by_itself(embedded_stack: Stack,
                                                              source_client: Any) -> None:
    """A 1 MB capped oplog, heavy writes, and oplog rounds queued behind the
    slices (one worker process): the oplog rolls over before the first rounds
    run. The job goes resync_required with the reason, a new initial sync
    (generation 2) starts by itself and reaches routine."""
    stack = embedded_stack
    server, client = _sandbox(source_client, 3 * 1024 * 1024, oplog_size_bytes=1024 * 1024)
    server.set_latency(15)
    stack.worker(concurrency=1)
    stack.cli("deployments", "add", "src", "--uri", server.uri)
    stop = threading.Event()
    writer = _heavy_writes(client, stop)
    try:
        stack.cli("jobs", "start", "src")
        deadline = time.monotonic() + 120
        while stack.job("src")["generation"] < 2:
            assert time.monotonic() < deadline, (stack.job("src"), stack.logs())
            time.sleep(0.2)
    finally:
        stop.set()
        writer.join()
    server.set_latency(0)
    row = _finish_and_compare(stack, client)
    assert row["generation"] == 2
    events = stack.events(row["job"])
    gap = [e for e in events if e["kind"] == "job.resync_required"]
    assert len(gap) == 1 and "oplog gap" in gap[0]["message"], gap
    assert "rolled over" in gap[0]["message"] or "overwritten" in gap[0]["message"]
    restarted = [e for e in events if e["kind"] == "sync.started"]
    assert [e["data"]["generation"] for e in restarted] == [1, 2]
    assert "automatic resync" in restarted[1]["message"]
    order = [e["kind"] for e in events]
    assert order.index("job.resync_required") < len(order) - 1 - order[::-1].index("sync.started")
