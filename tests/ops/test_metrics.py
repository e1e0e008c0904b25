"""``GET /metrics`` of ``backupflows serve``: scraped over HTTP with the bearer
token, parsed by prometheus_client's parser, values equal to the catalog."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from bson.timestamp import Timestamp
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from backupflows.alerts import heartbeat, service
from backupflows.alerts.config import AlertConfig
from backupflows.catalog import optime
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, OplogSegment, utcnow
from backupflows.catalog.restore_models import Restore
from backupflows.catalog.snapshot_models import Block, Snapshot
from backupflows.ops import metrics
from backupflows.restore import http
from backupflows.storage.service import Storage

TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture
def server(catalog: int) -> Iterator[http.RestoreServer]:
    metrics.register()
    srv = http.make_server(Storage.open(), lambda rid: None, "127.0.0.1", 0, TOKEN)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _scrape(srv: http.RestoreServer, token: str | None = TOKEN) -> tuple[str, dict[tuple[str, tuple[Any, ...]], float]]:
    req = urllib.request.Request(f"{srv.url}/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        ctype, text = resp.headers["Content-Type"], resp.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return ctype, values


def _fill(job_id: int) -> None:
    head, last = Timestamp(1_700_000_000, 3), Timestamp(1_700_000_100, 1)
    now = utcnow()
    with session_scope() as s:
        s.execute(update(BackupJob).where(BackupJob.id == job_id).values(
            state="routine", head_ts=optime.pack(head), oplog_ts=optime.pack(last),
            source_ts=optime.pack(last), last_round_at=now, synced_at=now))
        s.add_all([OplogSegment(job_id=job_id, generation=1, after_ts=0, last_ts=10, count=5,
                                nbytes=1000, object_name="a"),
                   OplogSegment(job_id=job_id, generation=1, after_ts=10, last_ts=20, count=5,
                                nbytes=2345, object_name="b")])
        s.add_all([Snapshot(job_id=job_id, state="done", bytes_stored=700, bytes_logical=5000,
                            created_at=now - timedelta(hours=3),
                            completed_at=now - timedelta(hours=2)),
                   Snapshot(job_id=job_id, state="done", bytes_stored=300, bytes_logical=5000,
                            created_at=now - timedelta(minutes=31),
                            completed_at=now - timedelta(minutes=30)),
                   Snapshot(job_id=job_id, state="failed", error="killed")])
        s.add(Block(id="b" * 64, size=10, stored_size=640, state="live"))
        for seconds, state in ((3, "done"), (40, "done"), (7200, "failed")):
            s.add(Restore(deployment_name="prod", job_id=job_id, destination_kind="dir",
                          destination={}, selection={}, state=state, result={},
                          started_at=now - timedelta(seconds=seconds), finished_at=now))
        s.add(Restore(deployment_name="prod", job_id=job_id, destination_kind="dir",
                      destination={}, selection={}, state="queued", result={}))


def test_metrics_match_the_catalog(catalog: int, server: http.RestoreServer) -> None:
    _fill(catalog)
    heartbeat.record()
    service.evaluate(cfg=AlertConfig(disk_free_bytes=2**62))  # opens low_head_disk_space
    ctype, m = _scrape(server)
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype
    dep = (("deployment", "prod"),)
    assert m[("backupflows_job_state", (("deployment", "prod"), ("state", "routine")))] == 1
    assert m[("backupflows_job_state", (("deployment", "prod"), ("state", "failed")))] == 0
    # the head has not applied the source's newest entry: its lag is the head entry's age
    assert abs(m[("backupflows_head_lag_seconds", dep)]
               - (utcnow().timestamp() - 1_700_000_000)) < 5
    assert m[("backupflows_head_optime_seconds", dep)] == 1_700_000_000
    assert m[("backupflows_oplog_optime_seconds", dep)] == 1_700_000_100
    assert m[("backupflows_oplog_stored_bytes", dep)] == 3345
    assert m[("backupflows_oplog_segments", dep)] == 2
    assert m[("backupflows_snapshots", dep)] == 2
    assert m[("backupflows_snapshot_stored_bytes", dep)] == 1000
    assert m[("backupflows_snapshot_logical_bytes", dep)] == 10000
    assert 1795 <= m[("backupflows_last_snapshot_age_seconds", dep)] <= 1900
    assert m[("backupflows_blockstore_stored_bytes", ())] == 640
    done = (("state", "done"),)
    assert m[("backupflows_restore_duration_seconds_count", done)] == 2
    assert m[("backupflows_restore_duration_seconds_bucket", (("le", "5.0"), ("state", "done")))] == 1
    assert m[("backupflows_restore_duration_seconds_bucket", (("le", "60.0"), ("state", "done")))] == 2
    assert 42 <= m[("backupflows_restore_duration_seconds_sum", done)] <= 45
    assert m[("backupflows_restore_duration_seconds_count", (("state", "failed"),))] == 1
    assert m[("backupflows_restores", (("state", "queued"),))] == 1
    assert m[("backupflows_failures_total", (("kind", "snapshot"),))] == 1
    assert m[("backupflows_failures_total", (("kind", "restore"),))] == 1
    assert m[("backupflows_open_alerts", (("kind", "low_head_disk_space"),))] == 1
    assert m[("backupflows_open_alerts", (("kind", "oplog_behind"),))] == 0
    assert m[("backupflows_daemon_heads_free_bytes", (("daemon", "d1"),))] > 0
    assert 0 <= m[("backupflows_daemon_report_age_seconds", (("daemon", "d1"),))] < 60


def test_metrics_need_the_token_and_follow_state_changes(
        catalog: int, server: http.RestoreServer) -> None:
    for token in (None, "wrong-token-wrong-token"):
        with pytest.raises(urllib.error.HTTPError) as err:
            _scrape(server, token)
        assert err.value.code == 401
    _, m = _scrape(server)
    key = ("backupflows_job_state", (("deployment", "prod"), ("state", "initial_sync")))
    assert m[key] == 1 and ("backupflows_last_snapshot_age_seconds",
                            (("deployment", "prod"),)) not in m
    with session_scope() as s:
        s.execute(update(BackupJob).values(state="failed", error="x"))
    _, m = _scrape(server)
    assert m[key] == 0
    assert m[("backupflows_job_state", (("deployment", "prod"), ("state", "failed")))] == 1
