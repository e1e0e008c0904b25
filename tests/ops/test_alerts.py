"""Each alert condition raised and cleared on a migrated catalog; an alert is
opened once, closed once, and leaves ``alert.opened``/``alert.closed`` events
and log lines."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from bson.timestamp import Timestamp
from sqlalchemy import select, update

from backupflows.alerts import heartbeat, service
from backupflows.alerts.config import AlertConfig, load_alert_config
from backupflows.catalog import optime
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, Event, utcnow
from backupflows.catalog.ops_models import Alert, DaemonHeartbeat
from backupflows.catalog.snapshot_models import Snapshot, SnapshotPolicy
from backupflows.errors import ConfigError

CFG = AlertConfig()


def _set(job_id: int, **values: Any) -> None:
    with session_scope() as s:
        s.execute(update(BackupJob).where(BackupJob.id == job_id).values(**values))


def _open(now: Any = None, cfg: AlertConfig = CFG) -> dict[str, Alert]:
    service.evaluate(now=now, cfg=cfg)
    with session_scope(readonly=True) as s:
        return {a.kind: a for a in s.scalars(select(Alert).where(Alert.state == "open"))}


def _events(kind: str) -> list[Event]:
    with session_scope(readonly=True) as s:
        return list(s.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))


def _ts(seconds_ago: float) -> int:
    return optime.pack(Timestamp(int(utcnow().timestamp() - seconds_ago), 1))


def _routine(job_id: int, **values: Any) -> None:
    now = utcnow()
    base: dict[str, Any] = {"state": "routine", "oplog_ts": _ts(5), "head_ts": _ts(5),
                            "source_ts": _ts(5), "last_round_at": now, "synced_at": now}
    _set(job_id, **{**base, **values})


def test_oplog_behind_opens_once_and_closes(catalog: int, caplog: pytest.LogCaptureFixture
                                            ) -> None:
    _routine(catalog, last_round_at=utcnow() - timedelta(hours=2))
    with caplog.at_level(logging.INFO, logger="backupflows.alerts"):
        alerts = _open()
        assert set(alerts) == {"oplog_behind"}
        first = alerts["oplog_behind"]
        assert first.job_id == catalog and "prod: oplog store 72" in first.message
        assert _open()["oplog_behind"].id == first.id  # evaluated again: the same alert
        _set(catalog, last_round_at=utcnow())
        assert _open() == {}
    assert [e.data["alert"] for e in _events("alert.opened")] == [first.id]
    assert [e.data["alert"] for e in _events("alert.closed")] == [first.id]
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("alert opened: [oplog_behind] prod:") for m in logged)
    assert any(m.startswith("alert closed: [oplog_behind]") for m in logged)
    with session_scope(readonly=True) as s:
        row = s.get(Alert, first.id)
        assert row is not None and row.state == "closed" and row.open_key is None


def test_oplog_behind_when_rounds_run_but_do_not_catch_up(catalog: int) -> None:
    _routine(catalog, oplog_ts=_ts(7200), head_ts=_ts(7200), source_ts=None)
    assert "oplog_behind" in _open()
    _set(catalog, oplog_ts=_ts(1), head_ts=_ts(1), source_ts=_ts(1))
    assert "oplog_behind" not in _open()


def test_head_behind(catalog: int) -> None:
    _routine(catalog, head_ts=_ts(3 * 3600))
    assert set(_open()) == {"head_behind"}
    assert "10795 s behind the stored oplog" in _open()["head_behind"].message
    _set(catalog, head_ts=_ts(5))
    assert _open() == {}


def test_late_snapshot_from_routine_then_from_last_snapshot(catalog: int) -> None:
    _routine(catalog, synced_at=utcnow() - timedelta(hours=10))  # default interval: 6 h
    assert "no snapshot since routine" in _open()["late_snapshot"].message
    with session_scope() as s:
        s.add(Snapshot(job_id=catalog, state="done", optime_ts=_ts(5),
                       created_at=utcnow() - timedelta(hours=1),
                       completed_at=utcnow() - timedelta(hours=1)))
    assert _open() == {}
    later = utcnow() + timedelta(hours=9)  # 10 h after that snapshot: > 1.5 x 6 h
    assert "last snapshot (1) 10.0 h old" in _open(now=later)["late_snapshot"].message
    with session_scope() as s:  # schedule disabled: nothing is late
        s.add(SnapshotPolicy(job_id=catalog, interval_hours=24, enabled=False))
    assert "late_snapshot" not in _open(now=later)


def test_late_snapshot_follows_the_interval_and_factor(catalog: int) -> None:
    _routine(catalog, synced_at=utcnow() - timedelta(hours=10))
    with session_scope() as s:
        s.add(SnapshotPolicy(job_id=catalog, interval_hours=8))
    assert _open() == {}  # 10 h < 1.5 x 8 h
    assert "late_snapshot" in _open(cfg=AlertConfig(snapshot_late_factor=1.2))


def test_resync_required_and_failed(catalog: int) -> None:
    _set(catalog, state="resync_required", error="oplog gap: oldest entry is newer")
    alert = _open()["resync_required"]
    assert "oplog gap" in alert.message
    _set(catalog, state="failed", error="source unreachable")
    assert set(_open()) == {"job_failed"}  # resync cleared, failure opened
    _set(catalog, state="initial_sync", error=None, last_round_at=utcnow())
    assert _open() == {}


def test_integrity_failure_opens_until_the_snapshot_goes(catalog: int) -> None:
    from backupflows.storage import integrity
    from backupflows.storage.service import Storage

    with session_scope() as s:
        snap = Snapshot(job_id=catalog, state="done", optime_ts=_ts(5))
        s.add(snap)
        s.flush()
        sid = snap.id
    # what an integrity check writes for a failing snapshot (storage/integrity.py)
    result = integrity.StorageCheck(snapshots_checked=1,
                                    failed={sid: [f"snapshot {sid}: block ab12 is missing"]})
    with session_scope(readonly=True) as s:
        rows = [(s.get(Snapshot, sid), "prod")]
    integrity._raise_alerts(Storage.open(), rows, result)
    alert = _open()["integrity_failure"]
    assert alert.subject == f"snapshot:{sid}" and "block ab12 is missing" in alert.message
    with session_scope() as s:
        s.execute(update(Snapshot).where(Snapshot.id == sid).values(state="expired"))
    assert _open() == {}


def test_daemon_down_after_no_report(catalog: int) -> None:
    report = heartbeat.record()  # daemon d1 (the settings) reports
    assert report["daemon_id"] == "d1" and heartbeat.daemons_to_ask() == ["d1"]
    assert "daemon_down" not in _open()
    alert = _open(now=utcnow() + timedelta(minutes=16))["daemon_down"]
    assert alert.daemon_id == "d1" and "holds the heads of prod" in alert.message
    heartbeat.record()  # it reports again
    assert "daemon_down" not in _open()
    _set(catalog, state="terminated")  # holds no head any more: asked while recently seen
    assert heartbeat.daemons_to_ask() == ["d1"]
    with session_scope() as s:
        s.execute(update(DaemonHeartbeat).values(seen_at=utcnow() - timedelta(days=2)))
    assert heartbeat.daemons_to_ask() == []


def test_daemon_that_never_reported(catalog: int) -> None:
    with session_scope() as s:
        assert s.scalar(select(DaemonHeartbeat)) is None
    _set(catalog, created_at=utcnow() - timedelta(hours=1), last_round_at=utcnow())
    assert "never reported" in _open()["daemon_down"].message
    _set(catalog, state="terminated")  # a terminated job's daemon holds no head
    assert _open() == {}


def test_low_head_disk_space(catalog: int) -> None:
    heartbeat.record()
    tight = AlertConfig(disk_free_bytes=2**62)  # more than any disk has
    alert = _open(cfg=tight)["low_head_disk_space"]
    assert alert.daemon_id == "d1" and alert.data["free_bytes"] > 0
    roomy = AlertConfig(disk_free_bytes=1, disk_free_percent=0.0001)
    assert "low_head_disk_space" not in _open(cfg=roomy)
    assert "low_head_disk_space" in _open(cfg=AlertConfig(disk_free_bytes=1,
                                                          disk_free_percent=99.9999))


def test_thresholds_from_the_environment() -> None:
    cfg = load_alert_config({"BACKUPFLOWS_ALERT_OPLOG_BEHIND": "60",
                             "BACKUPFLOWS_ALERT_DISK_FREE_BYTES": "5GiB",
                             "BACKUPFLOWS_ALERT_SNAPSHOT_LATE_FACTOR": "2",
                             "BACKUPFLOWS_ALERT_WEBHOOK_URL": "https://hooks.example/x"})
    assert (cfg.oplog_behind, cfg.disk_free_bytes, cfg.snapshot_late_factor) == (
        60, 5 * 1024**3, 2.0)
    with pytest.raises(ConfigError, match="BACKUPFLOWS_ALERT_HEAD_BEHIND='soon'"):
        load_alert_config({"BACKUPFLOWS_ALERT_HEAD_BEHIND": "soon"})
    with pytest.raises(ConfigError, match="ALERT_WEBHOOK_URL: expected an http"):
        load_alert_config({"BACKUPFLOWS_ALERT_WEBHOOK_URL": "ftp://x"})
    with pytest.raises(ConfigError, match="ALERT_DISK_FREE_PERCENT"):
        load_alert_config({"BACKUPFLOWS_ALERT_DISK_FREE_PERCENT": "150"})


@pytest.mark.postgres
def test_concurrent_passes_open_one_alert_on_postgresql(postgres_url: str, data_dir: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from backupflows.catalog import migrate
    from backupflows.catalog.db import dispose_engines
    from backupflows.jobs import service as jobs
    from backupflows.settings import reset_settings

    monkeypatch.setenv("BACKUPFLOWS_CATALOG_URL", postgres_url)
    reset_settings()
    try:
        migrate.upgrade()
        jobs.add_deployment("pg", "mongodb://h:1/?replicaSet=rs0", [], [])
        job_id = jobs.start_job("pg", "d1").job_id
        _set(job_id, state="failed", error="x", last_round_at=utcnow())
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def run() -> None:
            barrier.wait()
            try:
                service.evaluate(cfg=CFG)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        with session_scope(readonly=True) as s:
            assert [a.kind for a in s.scalars(select(Alert))] == ["job_failed"]
        assert len(_events("alert.opened")) == 1
    finally:
        dispose_engines(close=True)
