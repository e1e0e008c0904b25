"""``backupflows alerts [NAME] [--all] [--json]``: open alerts (or recent history)."""

from __future__ import annotations

import json

import click

from backupflows.cli.deployments import require_catalog


@click.command()
@click.argument("name", required=False)
@click.option("--all", "include_closed", is_flag=True,
              help="Also closed alerts (the latest 200).")
@click.option("--json", "as_json", is_flag=True,
              help="JSON: a list of {id, kind, state, subject, deployment, job, daemon_id, "
                   "message, data, opened_at, closed_at}.")
def alerts(name: str | None, include_closed: bool, as_json: bool) -> None:
    """Open alerts (of deployment NAME, or all); exit 0 even when some are open."""
    from backupflows.alerts.service import list_alerts

    require_catalog()
    rows = list_alerts(include_closed=include_closed, deployment=name)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no open alerts" if not include_closed else "no alerts")
        return
    for r in rows:
        state = "" if r["state"] == "open" else f" (closed {r['closed_at'][:19]}Z)"
        click.echo(f"#{r['id']:<5} {r['kind']:<20} since {r['opened_at'][:19]}Z  "
                   f"{r['message']}{state}")
