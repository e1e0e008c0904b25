"""``status``, ``events`` and ``alerts`` on a catalog: both outputs, the new
status keys, errors as one line."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from bson.timestamp import Timestamp
from click.testing import CliRunner
from sqlalchemy import update

from backupflows.alerts import service
from backupflows.alerts.config import AlertConfig
from backupflows.catalog import optime
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, OplogSegment, utcnow
from backupflows.catalog.restore_models import Restore
from backupflows.catalog.snapshot_models import GroomRun, Snapshot, SnapshotPolicy
from backupflows.cli import cli
from tests.ops.conftest import PASSWORD

NOW_T = int(utcnow().timestamp())
OLD_KEYS = {"deployment", "job", "state", "generation", "daemon_id", "t0", "head_ts",
            "oplog_ts", "lag_seconds", "error", "progress", "updated_at"}
NEW_KEYS = {"head_time", "last_snapshot", "next_snapshot_due", "pit_window", "open_alerts",
            "storage"}


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    return result.output


def _routine_with_history(job_id: int) -> int:
    p = optime.pack
    now = utcnow()
    with session_scope() as s:
        s.execute(update(BackupJob).where(BackupJob.id == job_id).values(
            state="routine", head_ts=p(Timestamp(NOW_T - 50, 1)),
            oplog_ts=p(Timestamp(NOW_T - 10, 1)), source_ts=p(Timestamp(NOW_T - 10, 1)),
            last_round_at=now, synced_at=now - timedelta(hours=1)))
        s.add(SnapshotPolicy(job_id=job_id, interval_hours=6, pit_window_hours=24))
        s.add(OplogSegment(job_id=job_id, generation=1, after_ts=p(Timestamp(NOW_T - 100, 1)),
                           last_ts=p(Timestamp(NOW_T - 10, 1)), count=9, nbytes=4096,
                           object_name="seg"))
        snap = Snapshot(job_id=job_id, state="done", head_generation=1,
                        optime_ts=p(Timestamp(NOW_T - 60, 1)), bytes_stored=2048,
                        bytes_logical=9000, docs=12, created_at=now - timedelta(minutes=5),
                        completed_at=now - timedelta(minutes=4))
        s.add(snap)
        s.flush()
        s.add(Restore(deployment_name="prod", job_id=job_id, snapshot_id=snap.id,
                      destination_kind="dir", destination={}, selection={}, state="done",
                      result={}, docs=12, started_at=now, finished_at=now))
        s.add(GroomRun(gen=1, state="done", finished_at=now, blocks_deleted=3,
                       bytes_freed=300))
        return snap.id


def test_status_json_keeps_old_keys_and_adds_the_operator_view(catalog: int) -> None:
    sid = _routine_with_history(catalog)
    service.evaluate(cfg=AlertConfig(head_behind=30))  # head 40 s behind the stored oplog
    row = json.loads(_run("status", "--json"))[0]
    assert set(row) == OLD_KEYS | NEW_KEYS
    assert row["last_snapshot"]["id"] == sid and 230 < row["last_snapshot"]["age_seconds"] < 300
    assert row["next_snapshot_due"] > utcnow().isoformat()[:10]
    assert row["pit_window"]["from"] == {"t": NOW_T - 60, "i": 1}
    assert row["pit_window"]["to"] == {"t": NOW_T - 10, "i": 1}
    assert [a["kind"] for a in row["open_alerts"]] == ["head_behind"]
    assert row["storage"] == {"oplog_bytes": 4096, "oplog_segments": 1, "snapshots": 1,
                              "snapshot_bytes_stored": 2048, "snapshot_bytes_logical": 9000}
    text = _run("status")
    assert "LAST SNAPSHOT" in text and f"#{sid} 4m ago" in text
    assert f"{NOW_T - 60}:1 .. {NOW_T - 10}:1" in text and "6.0KiB" in text
    assert "ALERT prod: [head_behind] prod: head 40 s behind" in text


def test_status_of_a_deployment_without_job_has_every_key(catalog: int) -> None:
    from backupflows.jobs import service as jobs

    jobs.add_deployment("empty", "mongodb://h:1/?replicaSet=rs0", [], [])
    rows = {r["deployment"]: r for r in json.loads(_run("status", "--json"))}
    assert set(rows["empty"]) == OLD_KEYS | NEW_KEYS and rows["empty"]["storage"] is None
    assert "no job" in _run("status", "empty")


def test_events_merge_history_in_order(catalog: int) -> None:
    _routine_with_history(catalog)
    with session_scope() as s:
        s.execute(update(BackupJob).values(state="failed", error="boom"))
    service.evaluate(cfg=AlertConfig())
    lines = json.loads(_run("events", "prod", "--json"))
    kinds = [ln["kind"] for ln in lines]
    assert kinds.index("job.created") < kinds.index("sync.started")
    for kind in ("snapshot.taken", "restore.requested", "restore.done", "alert.opened"):
        assert kind in kinds
    assert "groom.done" not in kinds  # grooms are not one deployment's
    assert [ln["at"] for ln in lines] == sorted(ln["at"] for ln in lines)
    assert "groom.done" in [ln["kind"] for ln in json.loads(_run("events", "--json"))]
    text = _run("events", "prod", "-n", "2")
    assert len(text.splitlines()) == 2 and "alert.opened" in text


def test_alerts_both_outputs(catalog: int) -> None:
    assert _run("alerts") == "no open alerts\n"
    assert json.loads(_run("alerts", "--json")) == []
    with session_scope() as s:
        s.execute(update(BackupJob).values(state="resync_required", error="oplog gap"))
    service.evaluate(cfg=AlertConfig())
    rows = json.loads(_run("alerts", "--json"))
    assert [(r["kind"], r["deployment"], r["state"]) for r in rows] == [
        ("resync_required", "prod", "open")]
    assert "resync_required" in _run("alerts", "prod")
    with session_scope() as s:
        s.execute(update(BackupJob).values(state="stopped"))
    service.evaluate(cfg=AlertConfig())
    assert _run("alerts") == "no open alerts\n"
    closed = json.loads(_run("alerts", "--all", "--json"))
    assert closed[0]["state"] == "closed" and closed[0]["closed_at"]


@pytest.mark.parametrize("args", [("events", "nope"), ("alerts", "nope"), ("status", "nope")])
def test_unknown_deployment_is_one_line(catalog: int, args: tuple[str, ...],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from backupflows.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert err.startswith("error: no deployment named 'nope'") and err.count("\n") == 1
