"""``backupflows jobs start|stop|resync|terminate NAME``."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from backupflows.cli.deployments import require_catalog
from backupflows.errors import BackupflowsError
from backupflows.redact import redact_text

_FINAL_BAD = {"failed", "stopped", "terminated", "resync_required"}


@click.group()
def jobs() -> None:
    """Backup jobs: start, stop, resync, terminate."""


@jobs.command()
@click.argument("name")
@click.option("--wait", is_flag=True, help="Wait until the job is routine, with progress.")
@click.option("--timeout", type=click.IntRange(min=1), default=3600, show_default=True,
              help="With --wait: give up after this many seconds.")
@click.option("--no-check", is_flag=True,
              help="Do not check the source first (connect, replica set, filter).")
@click.option("--daemon", "daemon_id", default=None, metavar="ID",
              help="Daemon that holds the head (default: BACKUPFLOWS_DAEMON_ID).")
def start(name: str, wait: bool, timeout: int, no_check: bool, daemon_id: str | None) -> None:
    """Start (or restart) the backup of deployment NAME."""
    from backupflows.jobs import service
    from backupflows.settings import get_settings
    from backupflows.tasks import workflows

    require_catalog()
    if not no_check:
        preflight(name)
    ref = service.start_job(name, daemon_id or get_settings().daemon_id)
    if ref.action == "started":
        with queueing(name):
            workflows.launch_initial_sync(ref.job_id, ref.generation)
        click.echo(f"job {ref.job_id} of {name}: initial sync started on daemon {ref.daemon_id}")
    elif ref.action == "restarted":
        with queueing(name):
            workflows.after_resync(ref.job_id, ref.generation, ref.daemon_id)
        click.echo(f"job {ref.job_id} of {name}: new initial sync (generation {ref.generation})")
    else:
        click.echo(f"job {ref.job_id} of {name}: resumed (routine)")
    if wait:
        wait_routine(name, timeout)


@contextmanager
def queueing(name: str) -> Iterator[None]:
    """A broker that cannot be reached is one line; the job is recorded and the
    reconcile dispatcher queues its work once the broker is back."""
    from kombu.exceptions import OperationalError

    try:
        yield
    except OperationalError as exc:
        raise BackupflowsError(f"the job of {name} is recorded but its work could not be "
                               f"queued (broker unreachable: {redact_text(str(exc))}); it "
                               "starts when the broker and a worker are back") from None


def preflight(name: str) -> None:
    """Reach the source, check it is a replica set with an oplog, and that the
    filter matches something; raises one clear error otherwise."""
    from backupflows.catalog.db import session_scope
    from backupflows.jobs.config import job_config
    from backupflows.jobs.service import get_deployment
    from backupflows.source.client import connect
    from backupflows.source.namespaces import NamespaceFilter, list_namespaces
    from backupflows.source.topology import check_replica_set, newest_optime

    with session_scope(readonly=True) as s:
        dep = get_deployment(s, name)
        uri, include, exclude = dep.uri, list(dep.include_ns), list(dep.exclude_ns)
    client = connect(uri, timeout_s=float(job_config().source_timeout))
    try:
        check_replica_set(client)
        newest_optime(client)
        list_namespaces(client, NamespaceFilter(include, exclude))
    finally:
        client.close()


def wait_routine(name: str, timeout: int) -> None:
    from backupflows.jobs.status import status_rows

    deadline = time.monotonic() + timeout
    tty = sys.stderr.isatty()
    last = ""
    while True:
        row = status_rows(name)[0]
        line = progress_line(row)
        if line != last:
            click.echo(("\r" + line.ljust(100)) if tty else line, err=True, nl=not tty)
            last = line
        if row["state"] == "routine":
            if tty:
                click.echo("", err=True)
            click.echo(f"job {row['job']} of {name} is routine")
            return
        if row["state"] in _FINAL_BAD:
            raise BackupflowsError(f"job {row['job']} of {name} is {row['state']}: "
                                   f"{row['error'] or 'no reason recorded'}")
        if time.monotonic() > deadline:
            raise BackupflowsError(f"job {row['job']} of {name} is still {row['state']} after "
                                   f"{timeout} s (is a worker running? see 'backupflows status')")
        time.sleep(0.25)  # a cheap catalog read; answers within a quarter second


def progress_line(row: dict[str, Any]) -> str:
    p = row.get("progress") or {}
    text = f"{row['state']} (generation {row['generation']})"
    if p:
        text += (f": ranges {p['ranges_done']}/{p['ranges_total']}, slices loaded "
                 f"{p['slices_loaded']}/{p['slices']}, {p['docs']} docs, "
                 f"{p['bytes'] / 1e6:.1f} MB")
    if row.get("error"):
        text += f" [{row['error'][:80]}]"
    return text


@jobs.command()
@click.argument("name")
def stop(name: str) -> None:
    """Stop the job of NAME (data kept; 'jobs start' resumes it)."""
    from backupflows.jobs import service

    require_catalog()
    ref = service.stop_job(name)
    click.echo(f"job {ref.job_id} of {name} stopped")


@jobs.command()
@click.argument("name")
def resync(name: str) -> None:
    """Throw the head away and run a new initial sync of NAME."""
    from backupflows.jobs import service
    from backupflows.tasks import workflows

    require_catalog()
    ref = service.resync_job(name)
    with queueing(name):
        workflows.after_resync(ref.job_id, ref.generation, ref.daemon_id)
    click.echo(f"job {ref.job_id} of {name}: resync started (generation {ref.generation})")


@jobs.command()
@click.argument("name")
def terminate(name: str) -> None:
    """End the job of NAME for good; its slices, oplog store and head are deleted."""
    from backupflows.jobs import service
    from backupflows.tasks import workflows

    require_catalog()
    ref = service.terminate_job(name)
    with queueing(name):
        workflows.after_terminate(ref.job_id, ref.daemon_id)
    click.echo(f"job {ref.job_id} of {name} terminated")
