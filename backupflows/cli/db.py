"""``backupflows db upgrade|downgrade|current``: the catalog schema."""

from __future__ import annotations

import click

from backupflows.redact import redact_uri


def _url(url: str | None) -> str:
    from backupflows.catalog.db import catalog_url

    return catalog_url(url)


@click.group()
def db() -> None:
    """Catalog schema migrations (alembic revisions shipped with backupflows)."""


_URL_OPTION = click.option(
    "--url", metavar="URL", default=None,
    help="Catalog URL (default: BACKUPFLOWS_CATALOG_URL or the SQLite file in the data dir).",
)


@db.command()
@click.argument("revision", default="head")
@_URL_OPTION
def upgrade(revision: str, url: str | None) -> None:
    """Migrate the catalog up to REVISION (default: head)."""
    from backupflows.catalog import migrate

    url = _url(url)
    at = migrate.upgrade(url, revision)
    click.echo(f"catalog {redact_uri(url)} is at revision {at}")


@db.command()
@click.argument("revision")
@_URL_OPTION
def downgrade(revision: str, url: str | None) -> None:
    """Migrate the catalog down to REVISION ('base' removes every table)."""
    from backupflows.catalog import migrate

    url = _url(url)
    at = migrate.downgrade(url, revision)
    click.echo(f"catalog {redact_uri(url)} is at revision {at or 'base (empty)'}")


@db.command()
@_URL_OPTION
def current(url: str | None) -> None:
    """Print the catalog's revision and the newest one this version ships."""
    from backupflows.catalog import migrate

    url = _url(url)
    at, head = migrate.current(url), migrate.head()
    state = "up to date" if at == head else "run 'backupflows db upgrade'"
    click.echo(f"catalog {redact_uri(url)}: revision {at or 'none'} (head {head}, {state})")
