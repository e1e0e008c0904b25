"""Alembic environment for the backupflows catalog.

The alembic ``Config`` is built in code (``backupflows.catalog.migrate``); the
catalog URL comes from ``config.attributes["url"]`` or, when alembic is run
by hand, from ``BACKUPFLOWS_CATALOG_URL`` (via ``backupflows.settings``).
"""

from __future__ import annotations

from alembic import context

from backupflows.catalog.db import catalog_url, create_catalog_engine
from backupflows.catalog.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("url") or catalog_url()


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``--sql``) without a database connection."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a live connection, in one transaction."""
    engine = create_catalog_engine(_url())
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "sqlite":
                # batch migrations copy tables: no FK actions while they do
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
