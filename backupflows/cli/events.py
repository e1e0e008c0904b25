"""``backupflows events [NAME] [--follow] [--json] [--limit N]``: a job's history."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import click

from backupflows.cli.deployments import require_catalog


@click.command()
@click.argument("name", required=False)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True,
              help="JSON: a list of {at, kind, deployment, job, message, data}; with "
                   "--follow, one object per line.")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=50, show_default=True,
              help="Show the last N lines (0: all).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between polls with --follow.")
def events(name: str | None, follow: bool, as_json: bool, limit: int, interval: float) -> None:
    """History of deployment NAME's jobs (or of everything): state changes, syncs,
    validations, snapshots, restores, grooms and alerts, oldest first."""
    from backupflows.catalog.db import session_scope
    from backupflows.ops.view import history

    require_catalog()
    with session_scope(readonly=True) as s:
        lines = history(s, name, limit=limit)
    if as_json and not follow:
        click.echo(json.dumps([ln.to_json() for ln in lines], indent=2))
        return
    if not lines and not follow:
        click.echo("no events")
    seen = {ln.key: ln.at for ln in lines}
    for ln in lines:
        _print(ln, as_json, name is None)
    while follow:
        time.sleep(interval)
        since = max(seen.values(), default=None)
        since = since - timedelta(seconds=10) if since is not None else None
        with session_scope(readonly=True) as s:
            fresh = history(s, name, since=since, limit=0 if since else limit)
        for ln in fresh:
            if ln.key not in seen:
                seen[ln.key] = ln.at
                _print(ln, as_json, name is None)
        if since is not None:  # forget what can no longer come back
            seen = {k: at for k, at in seen.items() if at >= since} or seen


def _print(ln: object, as_json: bool, with_name: bool) -> None:
    from backupflows.ops.view import Line

    assert isinstance(ln, Line)
    if as_json:
        click.echo(json.dumps(ln.to_json()), nl=True)
        return
    who = f"{ln.deployment or '-'}  " if with_name else ""
    click.echo(f"{ln.at.strftime('%Y-%m-%dT%H:%M:%SZ')}  {who}{ln.kind:<22} {ln.message}")
