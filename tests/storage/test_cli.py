"""The operator's snapshot commands, end to end through ``backupflows.cli.main``:
``snapshots list|take --local|delete|policy``, ``groom plan|run``,
``check --storage``, their bad input (one line, non-zero exit, nothing
changed), and the beat-dispatched path with a real worker process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob
from backupflows.catalog.snapshot_models import Snapshot
from backupflows.cli import main
from backupflows.head.store import HeadStore
from backupflows.jobs.resources import head_path
from backupflows.settings import get_settings
from backupflows.storage import operations, service
from backupflows.storage.blockstore import object_name
from tests.oplog.oplog_gen import generate
from tests.plugins.services import REPO_ROOT, WorkerProcess
from tests.storage.snapshot_helpers import add_job, fill

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def oplog() -> list[bytes]:
    return generate(seed=11, n=2400)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``backupflows ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(result: tuple[int, str, str], *needles: str) -> None:
    code, _, err = result
    assert code != 0, result
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], err


@pytest.fixture
def job(data_dir: Path) -> int:
    """A migrated embedded catalog with routine deployment rs0, no head yet."""
    from backupflows.catalog import migrate

    migrate.upgrade()
    return add_job(get_settings().catalog_url, "rs0")


def make_head(job_id: int, entries: list[bytes]) -> Path:
    """The head of ``job_id`` where this daemon keeps it, filled by the Applier."""
    with session_scope(readonly=True) as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        path = head_path(job.id, job.generation)
    with HeadStore(path) as head:
        fill(head, entries)
    return path


def snapshots_json(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    code, out, err = run(capsys, "snapshots", "list", "rs0", "--json")
    assert code == 0, err
    return list(json.loads(out))


# ---------------------------------------------------------------- policy
def test_policy_shows_defaults_saves_changes_and_says_when_next_due(
        job: int, capsys: pytest.CaptureFixture[str], oplog: list[bytes]) -> None:
    code, out, err = run(capsys, "snapshots", "policy", "rs0", "--json")
    assert code == 0, err
    p = json.loads(out)
    assert (p["interval_hours"], p["reference_time"], p["base_days"], p["daily_days"],
            p["weekly_weeks"], p["monthly_months"], p["pit_window_hours"], p["store"],
            p["enabled"]) == (6, "00:00", 2, 7, 4, 13, 24, "blockstore", True)
    assert p["due_now"] is True and p["last_scheduled"] is None  # never snapshotted
    assert [d.job_id for d in operations.due_jobs(service.Storage.open())] == [job]

    # disabled: the dispatcher skips the job, and the policy says so
    code, out, _ = run(capsys, "snapshots", "policy", "rs0", "--disable")
    assert code == 0 and "DISABLED" in out and "scheduled snapshots disabled" in out
    assert operations.due_jobs(service.Storage.open()) == []
    run(capsys, "snapshots", "policy", "rs0", "--enable")

    code, out, err = run(capsys, "snapshots", "policy", "rs0", "--interval-hours", "12",
                         "--reference-time", "03:30", "--base-days", "3", "--pit-hours", "48",
                         "--weekly-weeks", "0", "--store", "filesystem", "--gzip")
    assert code == 0, err
    assert "policy of rs0 saved" in out and "every 12 h from 03:30 UTC" in out
    assert "weekly off" in out and "store: filesystem (gzip on)" in out

    # a scheduled snapshot now: the next one is due at the next 03:30/15:30 slot
    make_head(job, oplog[:800])
    operations.take_for_job(service.Storage.open(), job, on_demand=False)
    before = datetime.now(UTC)
    code, out, err = run(capsys, "snapshots", "policy", "rs0", "--json")
    p = json.loads(out)
    assert (p["interval_hours"], p["reference_hour"], p["reference_minute"], p["base_days"],
            p["pit_window_hours"], p["weekly_weeks"], p["store"], p["gzip"]) \
        == (12, 3, 30, 3, 48, 0, "filesystem", True)
    due = datetime.fromisoformat(p["next_due"])
    assert p["due_now"] is False and p["last_scheduled"] is not None
    assert (due.hour, due.minute) in ((3, 30), (15, 30))
    assert before < due <= before + timedelta(hours=12)
    assert [s["store"] for s in snapshots_json(capsys)] == ["filesystem"]
    assert operations.due_jobs(service.Storage.open()) == []  # the dispatcher agrees


@pytest.mark.parametrize("args, needle", [
    (["--interval-hours", "7"], "interval must be one of (6, 8, 12, 24) hours"),
    (["--reference-time", "25:00"], "bad reference time '25:00'"),
    (["--reference-time", "noon"], "expected HH:MM"),
    (["--base-days", "9"], "base retention must be 2 to 5 days"),
    (["--pit-hours", "72"], "point-in-time window"),  # longer than the 2-day base
    (["--store", "tape"], "store must be one of blockstore, filesystem"),
    (["--full-every", "0"], "full-every must be 1 to 1000"),
])
def test_bad_policy_is_one_line_and_changes_nothing(
        job: int, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    run(capsys, "snapshots", "policy", "rs0", "--daily-days", "9")
    one_line_error(run(capsys, "snapshots", "policy", "rs0", *args, "--daily-days", "3"),
                   needle)
    code, out, _ = run(capsys, "snapshots", "policy", "rs0", "--json")
    p = json.loads(out)
    assert code == 0 and (p["interval_hours"], p["daily_days"], p["store"]) == (
        6, 9, "blockstore")  # the bad request saved nothing, not even its good part


def test_unknown_deployment_or_snapshot_is_one_line(
        job: int, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["snapshots", "policy", "nobody"], ["snapshots", "list", "nobody"],
                 ["snapshots", "take", "nobody", "--local"],
                 ["snapshots", "policy", "nobody", "--interval-hours", "12"],
                 ["check", "--storage", "nobody"]):
        one_line_error(run(capsys, *args), "no deployment named 'nobody'")
    one_line_error(run(capsys, "snapshots", "delete", "999"), "no snapshot 999")
    # no head on this daemon yet
    one_line_error(run(capsys, "snapshots", "take", "rs0", "--local"), "has no head")


def test_check_takes_exactly_one_mode(job: int, capsys: pytest.CaptureFixture[str]) -> None:
    for args in ([], ["rs0"], ["rs0", "--storage", "--against-source"], ["--against-source"]):
        code, out, err = run(capsys, "check", *args)
        assert code == 2 and out == "", (args, code, out, err)
        assert err.strip().splitlines()[-1].startswith("Error: ")
        assert "--against-source" in err


def test_uncatalogued_data_dir_says_to_upgrade(
        data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["snapshots", "list", "rs0"], ["groom", "plan"], ["check", "--storage"]):
        one_line_error(run(capsys, *args), "backupflows db upgrade")


# ------------------------------------------------- take, list, delete, groom
def test_take_list_delete_groom_and_the_survivor_still_checks(
        job: int, capsys: pytest.CaptureFixture[str], oplog: list[bytes]) -> None:
    path = make_head(job, oplog[:1200])
    code, out, err = run(capsys, "snapshots", "take", "rs0", "--local")
    assert code == 0 and out.startswith("snapshot ") and "of rs0 done" in out, err
    first = int(out.split()[1])
    with HeadStore(path) as head:
        fill(head, oplog[1200:])
    code, out, _ = run(capsys, "snapshots", "take", "rs0", "--local")
    second = int(out.split()[1])
    rows = snapshots_json(capsys)
    assert [r["id"] for r in rows] == [first, second]
    assert all(r["on_demand"] and r["store"] == "blockstore" and r["docs"] > 0 for r in rows)
    assert rows[1]["optime"]["t"] >= rows[0]["optime"]["t"]
    code, out, _ = run(capsys, "snapshots", "list", "rs0")
    assert code == 0 and [ln.split()[0] for ln in out.splitlines()[1:]] == [
        str(first), str(second)]

    code, out, _ = run(capsys, "check", "--storage", "rs0")
    assert code == 0 and "checked 2 snapshots" in out and "OK" in out

    # the newer one goes (its new blocks serve no other snapshot)
    code, out, _ = run(capsys, "snapshots", "delete", str(second))
    assert code == 0 and f"snapshot {second} expired" in out
    assert [r["id"] for r in snapshots_json(capsys)] == [first]
    one_line_error(run(capsys, "snapshots", "delete", str(second)), "already expired")

    code, out, _ = run(capsys, "groom", "plan", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["dead_blocks"] > 0 and len(plan["manifests"]) == 1
    code, out, _ = run(capsys, "groom", "plan")
    assert f"dead blocks: {plan['dead_blocks']}" in out
    code, out, _ = run(capsys, "groom", "run")
    assert code == 0 and f"deleted {plan['dead_blocks']} blocks" in out
    assert json.loads(run(capsys, "groom", "plan", "--json")[1])["dead_blocks"] == 0
    # the survivor reads back whole: every block, counts and content hashes
    code, out, _ = run(capsys, "check", "--storage", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] and report["snapshots_checked"] == 1


def test_groom_trigger_thresholds_come_from_the_settings(
        job: int, capsys: pytest.CaptureFixture[str], oplog: list[bytes],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ops Manager's trigger (live/total under a ratio and dead bytes over a
    size) with both thresholds configurable: the beat's groom check runs a
    groom only when the configured trigger is met."""
    from backupflows.settings import reset_settings

    path = make_head(job, oplog[:1200])
    run(capsys, "snapshots", "take", "rs0", "--local")
    with HeadStore(path) as head:
        fill(head, oplog[1200:])
    code, out, _ = run(capsys, "snapshots", "take", "rs0", "--local")
    run(capsys, "snapshots", "delete", out.split()[1])
    plan = json.loads(run(capsys, "groom", "plan", "--json")[1])
    assert plan["dead_blocks"] > 0 and 0 < plan["dead_bytes"] < 64 << 20
    # the defaults (45%, 64 MiB): a few dead kilobytes are not worth a groom
    assert plan["trigger"] == {"min_live_ratio": 0.45, "min_dead_bytes": 64 << 20, "met": False}
    assert "trigger (live < 45% and dead > 67.1 MB) not met" in run(capsys, "groom", "plan")[1]
    storage = service.Storage.open()
    assert operations.groom_if_due(storage) is None
    assert json.loads(run(capsys, "groom", "plan", "--json")[1])["dead_blocks"] == plan["dead_blocks"]

    monkeypatch.setenv("BACKUPFLOWS_GROOM_MIN_LIVE_RATIO", "100%")
    monkeypatch.setenv("BACKUPFLOWS_GROOM_MIN_DEAD_BYTES", "1k")
    reset_settings()
    again = json.loads(run(capsys, "groom", "plan", "--json")[1])
    assert again["trigger"] == {"min_live_ratio": 1.0, "min_dead_bytes": 1000, "met": True}
    result = operations.groom_if_due(storage)
    assert result is not None and result.blocks_deleted == plan["dead_blocks"]
    assert json.loads(run(capsys, "groom", "plan", "--json")[1])["dead_blocks"] == 0
    code, out, _ = run(capsys, "check", "--storage", "--json")
    assert code == 0 and json.loads(out)["ok"]


def test_check_storage_names_a_corrupt_and_a_missing_block(
        job: int, capsys: pytest.CaptureFixture[str], oplog: list[bytes]) -> None:
    make_head(job, oplog)
    code, out, _ = run(capsys, "snapshots", "take", "rs0", "--local")
    sid = int(out.split()[1])
    storage = service.Storage.open()
    ids = service.open_snapshot(storage, sid).block_ids()
    assert len(ids) >= 2
    root = get_settings().store_dir
    victim = root / object_name(ids[-1])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    (root / object_name(ids[0])).unlink()

    code, out, err = run(capsys, "check", "--storage", "rs0")
    assert code == 1, (out, err)
    assert "PROBLEMS" in out and f"snapshot {sid}" in out
    assert ids[-1] in out and ids[0] in out
    code, out, _ = run(capsys, "check", "--storage", "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and list(report["failed"]) == [str(sid)]


def test_integrity_alert_opens_on_a_bad_block_and_clears_when_a_check_passes_again(
        job: int, capsys: pytest.CaptureFixture[str], oplog: list[bytes]) -> None:
    """The weekly check's alert stays open while the snapshot is bad and
    closes once a check passes it again (the block put back from a copy)."""
    from sqlalchemy import select

    from backupflows.alerts import service as alerts
    from backupflows.catalog.models import Event
    from backupflows.catalog.ops_models import Alert

    def open_alerts() -> list[str]:
        alerts.evaluate()
        with session_scope(readonly=True) as s:
            return [a.subject for a in s.scalars(select(Alert).where(
                Alert.state == "open", Alert.kind == "integrity_failure"))]

    make_head(job, oplog)
    sid = int(run(capsys, "snapshots", "take", "rs0", "--local")[1].split()[1])
    storage = service.Storage.open()
    victim = get_settings().store_dir / object_name(
        service.open_snapshot(storage, sid).block_ids()[0])
    kept = victim.read_bytes()
    assert run(capsys, "check", "--storage")[0] == 0 and open_alerts() == []
    victim.unlink()
    assert run(capsys, "check", "--storage")[0] == 1
    assert open_alerts() == [f"snapshot:{sid}"]
    assert run(capsys, "check", "--storage")[0] == 1  # still bad: still open, once
    assert open_alerts() == [f"snapshot:{sid}"]
    victim.write_bytes(kept)  # the operator puts the block back
    assert run(capsys, "check", "--storage")[0] == 0
    assert open_alerts() == []
    run(capsys, "check", "--storage")
    with session_scope(readonly=True) as s:
        kinds = [e.kind for e in s.scalars(select(Event).where(
            Event.kind.in_(("alert", "integrity_ok"))).order_by(Event.id))]
    assert kinds == ["alert", "alert", "integrity_ok"]  # a passing snapshot is noted once


# ------------------------------------------------ beat path, real worker
@pytest.fixture
def redis_stack(request: pytest.FixtureRequest, tmp_path: Path,
                monkeypatch: pytest.MonkeyPatch,
                celery_workers: Callable[..., WorkerProcess]) -> Iterator[Any]:
    from tests.jobs.conftest import _stack

    yield from _stack(request, "redis", tmp_path, monkeypatch, celery_workers)


def test_dispatcher_queues_a_due_snapshot_on_the_daemon_queue_and_a_worker_takes_it(
        redis_stack: Any, oplog: list[bytes]) -> None:
    """``backupflows.storage.dispatch_snapshots`` (what beat runs every minute)
    finds the due routine job and sends its snapshot to ``daemon.<id>``; a worker
    consuming only ``storage`` and that queue takes it. A second dispatch finds
    nothing due (the schedule, not the number of beats, decides). `snapshots take
    --wait` goes the same way and reports the done snapshot."""
    stack = redis_stack
    daemon_id = stack.env["BACKUPFLOWS_DAEMON_ID"]
    job_id = add_job(get_settings().catalog_url, "rs0")
    with session_scope() as s:
        s.get(BackupJob, job_id).daemon_id = daemon_id  # type: ignore[union-attr]
    make_head(job_id, oplog[:1500])
    stack._start_worker(stack.env, "-Q", f"storage,daemon.{daemon_id}", "-c", "1",
                        timeout=60)

    assert dispatch(stack) == 1
    sid = wait_snapshot(job_id, timeout=30)
    with session_scope(readonly=True) as s:
        row = s.get(Snapshot, sid)
        assert row is not None and row.state == "done" and row.on_demand is False
        assert row.docs and row.docs > 0
    assert dispatch(stack) == 0
    # on demand through the same queue, waiting for the worker's answer
    done = cli(stack, "snapshots", "take", "rs0", "--wait")
    assert done.returncode == 0 and ": done" in done.stderr, (done.stdout, done.stderr)
    on_demand = int(done.stderr.split("snapshot ")[-1].split()[0])
    with session_scope(readonly=True) as s:
        row = s.get(Snapshot, on_demand)
        assert row is not None and row.state == "done" and row.on_demand is True
    done = cli(stack, "check", "--storage", "rs0")
    assert done.returncode == 0 and "checked 2 snapshots" in done.stdout, done.stderr
    # a job whose head is not on that daemon: the worker's error, one line
    other = add_job(get_settings().catalog_url, "rs1")
    with session_scope() as s:
        s.get(BackupJob, other).daemon_id = daemon_id  # type: ignore[union-attr]
    done = cli(stack, "snapshots", "take", "rs1", "--wait")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: snapshot of rs1 failed") and "has no head" in lines[0]


CLI = [sys.executable, "-c", "from backupflows.cli import main; main()"]


def cli(stack: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=_env(stack), capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT)


def _env(stack: Any) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), **stack.env}


def dispatch(stack: Any) -> int:
    """Send the beat dispatcher task (as beat would) from another process; its result."""
    code = ("from backupflows.tasks.app import app; "
            "print(app.send_task('backupflows.storage.dispatch_snapshots').get(timeout=30))")
    done = subprocess.run([sys.executable, "-c", code], env=_env(stack), capture_output=True,
                          text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip().splitlines()[-1])


def wait_snapshot(job_id: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(readonly=True) as s:
            rows = s.query(Snapshot).filter(Snapshot.job_id == job_id).all()
            states = [(r.id, r.state, r.error) for r in rows]
        done = [sid for sid, state, _ in states if state == "done"]
        if done:
            return done[0]
        assert not any(state == "failed" for _, state, _ in states), states
        time.sleep(0.2)
    raise AssertionError(f"no snapshot of job {job_id} within {timeout} s")
