"""kill -9 of the whole worker (main process, pool, embedded beat) at random
moments of slicing, head build, catch-up apply, validation and routine apply,
then a new worker: the job reaches routine, the head matches the source (no
document lost or duplicated), the head passes its integrity check and the
oplog store is one unbroken chain from T0."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from backupflows.catalog import optime
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, OplogSegment
from backupflows.head.store import HeadStore
from backupflows.jobs import resources
from backupflows.sandbox.sampledata import WriteLoad, generate
from tests.jobs.conftest import Stack

Phase = tuple[str, Callable[[dict[str, Any]], bool]]

SLICING: Phase = ("slicing", lambda r: r["state"] == "initial_sync"
                  and 0 < (r["progress"] or {}).get("ranges_done", 0)
                  < (r["progress"] or {}).get("ranges_total", 0))
BUILDING: Phase = ("build", lambda r: r["state"] == "building"
                   and 0 < (r["progress"] or {}).get("slices_loaded", 0)
                   < (r["progress"] or {}).get("slices", 0))
CATCH_UP: Phase = ("catch-up apply", lambda r: r["state"] == "building"
                   and (r["progress"] or {}).get("slices_loaded", -1)
                   == (r["progress"] or {}).get("slices", 0))
VALIDATING: Phase = ("validation", lambda r: r["state"] == "validating")
ROUTINE: Phase = ("routine apply", lambda r: r["state"] == "routine")

KINDS = ("orders", "events", "customers", "metrics")  # not sessions: sandbox_requests.md


def _mark(row: dict[str, Any]) -> tuple[Any, ...]:
    p = row["progress"] or {}
    return (row["state"], p.get("ranges_done"), p.get("slices_loaded"), str(row["head_ts"]))


def _wait_phase(stack: Stack, phase: Phase, since: tuple[Any, ...] | None,
                timeout: float = 120) -> dict[str, Any] | None:
    """The job in ``phase``, having made progress since the last kill (``since``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = stack.job("src")
        if phase[1](row) and _mark(row) != since:
            return row
        if row["state"] == "routine" and phase is not ROUTINE:
            return None  # the phase went by between two polls
        time.sleep(0.02)
    raise AssertionError(f"phase {phase[0]} not reached: {stack.job('src')}\n{stack.logs()}")


def _crash_run(stack: Stack, source_client: Any, phases: list[Phase], seed: int,
               target_bytes: int) -> list[str]:
    rng = random.Random(seed)
    server, client = source_client()
    server.set_latency(3)  # a little slower source: every phase lasts long enough to hit
    generate(client, databases=("shop", "ops"), collections=KINDS, target_bytes=target_bytes,
             seed=seed)
    namespaces = [f"{db}.{k}" for db in ("shop", "ops") for k in KINDS]
    worker = stack.worker()
    stack.cli("deployments", "add", "src", "--uri", server.uri)
    hit: list[str] = []
    since = None
    with WriteLoad(client, namespaces, rate_per_s=100, seed=seed, ddl_interval=2.0):
        stack.cli("jobs", "start", "src")
        for phase in phases:
            row = _wait_phase(stack, phase, since)
            if row is None:
                continue
            time.sleep(rng.uniform(0.0, 0.4))
            worker.kill()
            killed_in = stack.job("src")
            since = _mark(killed_in)
            hit.append(f"{phase[0]} ({killed_in['state']})")
            worker = stack.worker()
        stack.wait_state("src", "routine", timeout=240)
        time.sleep(2)
    server.set_latency(0)
    stack.wait_caught_up("src", client, timeout=90)
    report = stack.check("src")
    assert report["ok"], ([c for c in report["collections"] if not c["equal"]], hit)
    _assert_store_and_head(stack, stack.job("src")["job"])
    return hit


def _assert_store_and_head(stack: Stack, job_id: int) -> None:
    for w in stack.workers:
        w.stop()
    with session_scope(readonly=True) as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        segments = s.query(OplogSegment.after_ts, OplogSegment.last_ts).filter(
            OplogSegment.job_id == job_id, OplogSegment.generation == job.generation,
        ).order_by(OplogSegment.after_ts).all()
        position = job.t0_ts
        for after, last in segments:  # one chain: no hole, no overlap, no duplicate
            assert after == position, (optime.unpack(after), optime.unpack(position))
            position = last
        assert position == job.oplog_ts
        generation = job.generation
    path = resources.head_path(job_id, generation)
    with HeadStore(path) as head:
        assert head.integrity_check() == []
        assert head.missing_count() == 0


def test_kill_9_during_each_phase_then_routine_with_no_difference(
        embedded_stack: Stack, source_client: Any) -> None:
    seed = int(os.environ.get("BACKUPFLOWS_TEST_SEED", "11"))
    hit = _crash_run(embedded_stack, source_client, [SLICING, BUILDING, VALIDATING, ROUTINE],
                     seed, target_bytes=6 * 1024 * 1024)
    print("killed during:", hit)
    assert len(hit) >= 3, hit  # the phases that lasted long enough to be hit


@pytest.mark.soak
@pytest.mark.parametrize("kind", ["embedded_stack", "redis_stack"])
def test_kill_9_at_twelve_points(kind: str, request: pytest.FixtureRequest,
                                 source_client: Any) -> None:
    stack: Stack = request.getfixturevalue(kind)
    phases = [SLICING, SLICING, SLICING, BUILDING, BUILDING, CATCH_UP, VALIDATING, VALIDATING,
              ROUTINE, ROUTINE, ROUTINE, ROUTINE]
    hit = _crash_run(stack, source_client, phases, seed=random.randrange(1000),
                     target_bytes=60 * 1024 * 1024)
    assert len(hit) >= 10, hit
