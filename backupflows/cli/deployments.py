"""``backupflows deployments add|list``: the replica sets that are backed up."""

from __future__ import annotations

import json

import click


def require_catalog() -> None:
    """One clear line when the catalog is not migrated (or unreachable)."""
    from backupflows.catalog import migrate

    migrate.require_current()


@click.group()
def deployments() -> None:
    """Deployments: the replica sets backed up (URI and namespace filters)."""


@deployments.command("add")
@click.argument("name")
@click.option("--uri", required=True, metavar="URI",
              help="mongodb://[user:password@]host:port,.../?replicaSet=NAME")
@click.option("--include", "include", multiple=True, metavar="NS",
              help="Copy only this db or db.collection (repeatable; default: everything).")
@click.option("--exclude", "exclude", multiple=True, metavar="NS",
              help="Never copy this db or db.collection (repeatable).")
def add(name: str, uri: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    """Add deployment NAME (the URI is validated; its password is never shown)."""
    from backupflows.jobs.service import add_deployment

    require_catalog()
    row = add_deployment(name, uri, list(include), list(exclude))
    filters = ""
    if row["include"] or row["exclude"]:
        filters = f" (include {', '.join(row['include']) or 'everything'}"
        filters += f"; exclude {', '.join(row['exclude'])})" if row["exclude"] else ")"
    click.echo(f"deployment {row['name']} added: {row['uri']}{filters}")


@deployments.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="JSON: a list of {name, uri, include, exclude, job_state, created_at}.")
def list_cmd(as_json: bool) -> None:
    """List the deployments (URIs with passwords masked)."""
    from backupflows.jobs.service import list_deployments

    require_catalog()
    rows = list_deployments()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no deployments (add one with 'backupflows deployments add NAME --uri URI')")
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        scope = ",".join(r["include"]) or "*"
        if r["exclude"]:
            scope += " -" + ",-".join(r["exclude"])
        click.echo(f"{r['name']:<{width}}  {r['job_state'] or 'no job':<15}  {scope:<20}  "
                   f"{r['uri']}")
