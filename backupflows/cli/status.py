"""``backupflows status [NAME] [--json] [--watch]`` and ``backupflows check NAME --against-source`` /
``backupflows check --storage [NAME]``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import click

from backupflows.cli.deployments import require_catalog
from backupflows.errors import BackupflowsError


def _ts(value: dict[str, int] | None) -> str:
    return f"{value['t']}:{value['i']}" if value else "-"


@click.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="JSON: a list of {deployment, job, state, generation, daemon_id, t0, "
                   "head_ts, head_time, oplog_ts, lag_seconds, error, progress, updated_at, "
                   "last_snapshot, next_snapshot_due, pit_window, open_alerts, storage}.")
@click.option("--watch", "-w", is_flag=True, help="Refresh the screen until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between refreshes with --watch.")
def status(name: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """The one screen: per job state, head optime and lag, last snapshot and next due,
    point-in-time window, open alerts, storage used (of NAME, or every deployment)."""
    from backupflows.jobs.status import status_rows

    require_catalog()
    while True:
        rows = status_rows(name)
        if watch:
            click.echo("\x1b[H\x1b[2J", nl=False)  # home + clear (click drops it off a tty)
            click.echo(f"backupflows status   {datetime.now(UTC):%Y-%m-%d %H:%M:%S}Z   "
                       f"(every {interval:g} s, Ctrl-C stops)")
        if as_json:
            click.echo(json.dumps(rows, indent=None if watch else 2))
        else:
            _print_status(rows)
        if not watch:
            return
        time.sleep(interval)


def _print_status(rows: list[dict[str, Any]]) -> None:
    if not rows:
        click.echo("no deployments")
        return
    header = ("DEPLOYMENT", "JOB", "STATE", "HEAD", "LAG", "LAST SNAPSHOT", "NEXT DUE",
              "PIT WINDOW", "ALERTS", "STORED", "ERROR")
    table = [header] + [_status_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]
        click.echo("  ".join(cells).rstrip())
    for r in rows:
        for alert in r.get("open_alerts") or []:
            click.echo(f"ALERT {r['deployment']}: [{alert['kind']}] {alert['message']}")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}TiB"


def _when(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else "-"


def _status_cells(r: dict[str, Any]) -> tuple[str, ...]:
    lag = r["lag_seconds"]
    snap = r.get("last_snapshot")
    pit = r.get("pit_window")
    storage = r.get("storage") or {}
    stored = storage.get("oplog_bytes", 0) + storage.get("snapshot_bytes_stored", 0)
    state = r["state"] or "no job"
    if r["generation"] and r["generation"] > 1:
        state += f" (gen {r['generation']})"
    return (r["deployment"], str(r["job"] or "-"), state, _ts(r["head_ts"]),
            "-" if lag is None else f"{lag:.1f}s",
            f"#{snap['id']} {_age(snap['age_seconds'])} ago" if snap else "-",
            _when(r.get("next_snapshot_due")),
            f"{_ts(pit['from'])} .. {_ts(pit['to'])}" if pit else "-",
            str(len(r.get("open_alerts") or [])), _size(stored) if r["job"] else "-",
            (r["error"] or "")[:100])


@click.command()
@click.argument("name", required=False)
@click.option("--against-source", is_flag=True,
              help="Compare counts and content hashes of every collection, head vs source "
                   "(needs NAME).")
@click.option("--storage", is_flag=True,
              help="Read every block and manifest of the snapshots of NAME (or of all) and "
                   "verify hashes, counts and the block index.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON: --against-source: {deployment, job, head_ts, source_ts, "
                   "source_ahead, collections: [{ns, head_count, source_count, head_hash, "
                   "source_hash, equal}], differences, ok}; --storage: {ok, "
                   "snapshots_checked, blocks_checked, failed: {snapshot id: [problems]}}.")
@click.option("--timeout", type=click.IntRange(min=1), default=600, show_default=True,
              help="Seconds to wait for the daemon holding the head.")
def check(name: str | None, against_source: bool, storage: bool, as_json: bool,
          timeout: int) -> None:
    """Check a backup: --against-source (head of NAME vs its source) or --storage
    (snapshot storage). Exit 1 if a difference or a problem is found."""
    if against_source == storage:
        raise click.UsageError("give exactly one of --against-source and --storage")
    if against_source and name is None:
        raise click.UsageError("--against-source needs NAME")
    require_catalog()
    if storage:
        from backupflows.cli.snapshots import storage_check_cmd

        storage_check_cmd(name, as_json)
        return
    assert name is not None
    report = run_check(name, timeout)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_check(report)
    if not report["ok"]:
        raise SystemExit(1)


def run_check(name: str, timeout: int) -> dict[str, Any]:
    """Here when this process is the job's daemon, else a task on its queue."""
    from backupflows.catalog.db import session_scope
    from backupflows.jobs.check import check_against_source
    from backupflows.jobs.service import require_job
    from backupflows.settings import get_settings

    with session_scope(readonly=True) as s:
        job = require_job(s, name)
        job_id, daemon_id, state = job.id, job.daemon_id or "", job.state
    if state in ("initial_sync", "terminated"):
        raise BackupflowsError(f"the job of {name} has no head to check (state {state})")
    if daemon_id == get_settings().daemon_id:
        return check_against_source(job_id)  # the head is on this machine
    return _remote_check(job_id, daemon_id, timeout)


def _remote_check(job_id: int, daemon_id: str, timeout: int) -> dict[str, Any]:
    from celery.exceptions import TimeoutError as CeleryTimeout

    from backupflows.tasks import backup
    from backupflows.tasks.queues import daemon_queue

    result = backup.check.apply_async((job_id,), queue=daemon_queue(daemon_id))
    try:
        return dict(result.get(timeout=timeout))
    except CeleryTimeout:
        raise BackupflowsError(f"no answer from daemon {daemon_id} within {timeout} s: is its "
                               "worker running?") from None


def _print_check(report: dict[str, Any]) -> None:
    ahead = " (the source has moved on since: differences may be writes not applied yet)"
    click.echo(f"{report['deployment']}: head at {_ts(report['head_ts'])}, source at "
               f"{_ts(report['source_ts'])}{ahead if report['source_ahead'] else ''}")
    for row in report["collections"]:
        mark = "ok" if row["equal"] else "DIFFERENT"
        click.echo(f"  {row['ns']:<40} head {row['head_count']!s:>9}  source "
                   f"{row['source_count']!s:>9}  {mark}")
    if report["ok"]:
        click.echo("no difference")
    else:
        click.echo(f"{report['differences']} collection(s) differ")
