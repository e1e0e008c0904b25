"""``backupflows status [NAME] [--json]`` and ``backupflows check NAME --against-source`` /
``backupflows check --storage [NAME]``."""

from __future__ import annotations

import json
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
                   "head_ts, oplog_ts, lag_seconds, error, progress, updated_at}.")
def status(name: str | None, as_json: bool) -> None:
    """State of the backup job of NAME (or of every deployment)."""
    from backupflows.jobs.status import status_rows

    require_catalog()
    rows = status_rows(name)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no deployments")
        return
    header = ("DEPLOYMENT", "JOB", "STATE", "GEN", "HEAD_TS", "OPLOG_TS", "LAG_S", "ERROR")
    table = [header] + [_status_cells(r) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [c.ljust(w) for c, w in zip(row, widths)] + [row[-1]]
        click.echo("  ".join(cells).rstrip())


def _status_cells(r: dict[str, Any]) -> tuple[str, ...]:
    lag = r["lag_seconds"]
    return (r["deployment"], str(r["job"] or "-"), r["state"] or "no job",
            str(r["generation"] or "-"), _ts(r["head_ts"]), _ts(r["oplog_ts"]),
            "-" if lag is None else f"{lag:.1f}", (r["error"] or "")[:100])


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
