"""Prometheus text exposition of the catalog, served at ``GET /metrics`` by
``backupflows serve`` (importing this module registers the route).

``/metrics`` needs the same ``Authorization: Bearer <BACKUPFLOWS_API_TOKEN>``
as the other routes (Prometheus: ``authorization: {credentials: ...}`` in the
scrape config): deployment names and sizes are not for everyone. Every scrape
reads the catalog afresh (a few aggregate queries; restores are streamed).

Per deployment (label ``deployment``), of its current job:
``backupflows_job_state{state}`` (1 for the current state, 0 for the others),
``backupflows_job_generation``, ``backupflows_head_lag_seconds``,
``backupflows_head_optime_seconds``, ``backupflows_oplog_optime_seconds``,
``backupflows_oplog_stored_bytes``, ``backupflows_oplog_segments``,
``backupflows_snapshots``, ``backupflows_snapshot_stored_bytes``,
``backupflows_snapshot_logical_bytes``, ``backupflows_last_snapshot_age_seconds``.
Global: ``backupflows_blockstore_stored_bytes`` (live blocks),
``backupflows_restore_duration_seconds`` (histogram, label ``state`` done or
failed), ``backupflows_restores{state}``, ``backupflows_failures_total{kind}``
(failed snapshots, restores, grooms and job failures recorded in the catalog),
``backupflows_open_alerts{kind}``, ``backupflows_daemon_report_age_seconds``,
``backupflows_daemon_heads_free_bytes`` and ``..._total_bytes`` (label
``daemon``). Celery's own task counters (``flower_events_total{type=
"task-failed"}``...) stay on Flower's ``/metrics``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from http import HTTPStatus
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from backupflows.alerts.conditions import JobView, current_jobs
from backupflows.catalog import optime
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import JOB_STATES, Event, JobState, utcnow
from backupflows.catalog.ops_models import ALERT_KINDS, Alert, DaemonHeartbeat
from backupflows.catalog.restore_models import Restore
from backupflows.catalog.snapshot_models import Block, GroomRun, Snapshot
from backupflows.jobs.lifecycle import ACTIVE, lag_seconds
from backupflows.ops.view import storage_used

# the classic text format (what generate_latest writes), understood by every scraper
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RESTORE_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, float("inf"))


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"backupflows_{name}", doc, labels=labels)


class CatalogCollector:
    """A prometheus_client collector reading the catalog at each scrape."""

    def __init__(self, catalog_url: str | None = None) -> None:
        self.catalog_url = catalog_url

    def collect(self) -> Iterator[Metric]:
        with session_scope(self.catalog_url, readonly=True) as s:
            now = utcnow()
            yield from _job_metrics(s, current_jobs(s), now)
            yield from _global_metrics(s, now)


def _job_metrics(s: Session, jobs: list[JobView], now: datetime) -> Iterator[Metric]:
    dep = ["deployment"]
    state = _gauge("job_state", "1 for the job's current state.", ["deployment", "state"])
    gen = _gauge("job_generation", "Initial sync generation of the job.", dep)
    lag = _gauge("head_lag_seconds", "How far the head is behind the source.", dep)
    head = _gauge("head_optime_seconds", "Time of the head's applied optime.", dep)
    oplog = _gauge("oplog_optime_seconds", "Time of the newest stored oplog entry.", dep)
    oplog_bytes = _gauge("oplog_stored_bytes", "Bytes of the job's oplog store.", dep)
    segments = _gauge("oplog_segments", "Stored oplog segments.", dep)
    snaps = _gauge("snapshots", "Restorable (done) snapshots.", dep)
    stored = _gauge("snapshot_stored_bytes", "Bytes stored by restorable snapshots.", dep)
    logical = _gauge("snapshot_logical_bytes", "Logical bytes of restorable snapshots.", dep)
    age = _gauge("last_snapshot_age_seconds", "Age of the newest restorable snapshot.", dep)
    for v in jobs:
        job, name = v.job, v.deployment
        for st in JOB_STATES:
            state.add_metric([name, st], 1.0 if job.state == st else 0.0)
        gen.add_metric([name], job.generation)
        value = job.lag_seconds
        if job.state == JobState.ROUTINE:
            value = lag_seconds(job.head_ts, job.source_ts)
        if value is not None and job.state in ACTIVE:
            lag.add_metric([name], value)
        if job.head_ts:
            head.add_metric([name], optime.unpack(job.head_ts).time)
        if job.oplog_ts:
            oplog.add_metric([name], optime.unpack(job.oplog_ts).time)
        used = storage_used(s, job.id)
        oplog_bytes.add_metric([name], used["oplog_bytes"])
        segments.add_metric([name], used["oplog_segments"])
        snaps.add_metric([name], used["snapshots"])
        stored.add_metric([name], used["snapshot_bytes_stored"])
        logical.add_metric([name], used["snapshot_bytes_logical"])
        last = s.scalar(select(func.max(func.coalesce(Snapshot.completed_at, Snapshot.created_at)))
                        .where(Snapshot.job_id == job.id, Snapshot.state == "done"))
        if last is not None:
            if last.tzinfo is None:  # SQLite returns aggregates naive (they are UTC)
                last = last.replace(tzinfo=now.tzinfo)
            age.add_metric([name], (now - last).total_seconds())
    yield from (state, gen, lag, head, oplog, oplog_bytes, segments, snaps, stored, logical, age)


def _global_metrics(s: Session, now: datetime) -> Iterator[Metric]:
    blocks = _gauge("blockstore_stored_bytes", "Stored bytes of live blockstore blocks.", [])
    blocks.add_metric([], float(s.scalar(select(func.coalesce(func.sum(Block.stored_size), 0))
                                         .where(Block.state == "live")) or 0))
    yield blocks
    yield from _restore_metrics(s)
    failures = CounterMetricFamily("backupflows_failures", "Failed work recorded in the "
                                   "catalog (snapshots, restores, grooms, jobs).", labels=["kind"])
    for kind, count in (
        ("snapshot", s.scalar(select(func.count()).where(Snapshot.state == "failed"))),
        ("restore", s.scalar(select(func.count()).where(Restore.state == "failed"))),
        ("groom", s.scalar(select(func.count()).where(GroomRun.state == "failed"))),
        ("job", s.scalar(select(func.count()).where(Event.kind == "job.state",
                                                   Event.message.like("failed:%")))),
    ):
        failures.add_metric([kind], float(count or 0))
    yield failures
    alerts = _gauge("open_alerts", "Open alerts by kind.", ["kind"])
    counts = {k: n for k, n in s.execute(select(Alert.kind, func.count())
                                         .where(Alert.state == "open").group_by(Alert.kind))}
    for kind in ALERT_KINDS:
        alerts.add_metric([kind], float(counts.get(kind, 0)))
    yield alerts
    yield from _daemon_metrics(s, now)


def _restore_metrics(s: Session) -> Iterator[Metric]:
    hist = HistogramMetricFamily("backupflows_restore_duration_seconds",
                                 "Duration of finished restores.", labels=["state"])
    by_state = _gauge("restores", "Restores by state.", ["state"])
    states = {k: n for k, n in s.execute(select(Restore.state, func.count())
                                         .group_by(Restore.state))}
    for st in ("queued", "running", "done", "failed"):
        by_state.add_metric([st], float(states.get(st, 0)))
    for st in ("done", "failed"):
        counts = [0] * len(RESTORE_BUCKETS)
        total = 0.0
        rows = s.execute(select(Restore.started_at, Restore.finished_at).where(
            Restore.state == st, Restore.started_at.is_not(None),
            Restore.finished_at.is_not(None)).execution_options(yield_per=1000))
        for started, finished in rows:
            seconds = max(0.0, (finished - started).total_seconds())
            total += seconds
            for i, bound in enumerate(RESTORE_BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
        buckets = [(_le(b), float(c)) for b, c in zip(RESTORE_BUCKETS, counts)]
        hist.add_metric([st], buckets, total)
    yield hist
    yield by_state


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _daemon_metrics(s: Session, now: datetime) -> Iterator[Metric]:
    age = _gauge("daemon_report_age_seconds", "Seconds since the daemon last reported.",
                 ["daemon"])
    free = _gauge("daemon_heads_free_bytes", "Free bytes on the daemon's heads disk.",
                  ["daemon"])
    total = _gauge("daemon_heads_total_bytes", "Size of the daemon's heads disk.", ["daemon"])
    for beat in s.scalars(select(DaemonHeartbeat).order_by(DaemonHeartbeat.daemon_id)):
        age.add_metric([beat.daemon_id], (now - beat.seen_at).total_seconds())
        if beat.disk_free is not None and beat.disk_total is not None:
            free.add_metric([beat.daemon_id], beat.disk_free)
            total.add_metric([beat.daemon_id], beat.disk_total)
    yield from (age, free, total)


def exposition(catalog_url: str | None = None) -> bytes:
    """The metrics in Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CatalogCollector(catalog_url))  # type: ignore[arg-type]
    return generate_latest(registry)


def _handler(ctx: Any, _: re.Match[str]) -> Any:
    from backupflows.restore.http import Response

    return Response(HTTPStatus.OK, raw=exposition(ctx.storage.catalog_url),
                    content_type=CONTENT_TYPE)


def register() -> None:
    """Add ``GET /metrics`` (bearer token) to ``backupflows serve`` (once)."""
    from backupflows.restore import http

    if not any(r.pattern.pattern == "^/metrics$" for r in http.ROUTES):
        http.add_route("GET", r"/metrics", _handler)


register()
