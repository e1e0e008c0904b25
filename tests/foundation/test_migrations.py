"""Alembic revisions: upgrade -> downgrade -> upgrade on SQLite and PostgreSQL,
and the revisions build exactly the tables the models describe."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from backupflows.catalog import migrate
from backupflows.catalog.db import create_catalog_engine
from backupflows.catalog.models import Base
from backupflows.errors import CatalogError

TABLES = {"deployments", "backup_jobs", "events"}


def _tables(url: str) -> set[str]:
    engine = create_catalog_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _schema_diff(url: str) -> list[object]:
    engine = create_catalog_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _round_trip(url: str) -> None:
    assert migrate.current(url) is None
    assert migrate.upgrade(url) == migrate.head()
    assert _tables(url) >= TABLES
    assert _schema_diff(url) == []  # revisions == models
    assert migrate.downgrade(url, "base") is None
    assert _tables(url) & TABLES == set()
    assert migrate.upgrade(url) == migrate.head()
    assert _tables(url) >= TABLES
    migrate.require_current(url)


def test_round_trip_on_sqlite(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path}/catalog.db")


@pytest.mark.postgres
def test_round_trip_on_postgresql(postgres_url: str) -> None:
    _round_trip(postgres_url)


def test_require_current_names_the_fix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/catalog.db"
    with pytest.raises(CatalogError, match="backupflows db upgrade"):
        migrate.require_current(url)


def test_unreachable_catalog_is_one_redacted_line() -> None:
    with pytest.raises(CatalogError) as err:
        migrate.upgrade("postgresql+psycopg://bob:hunter2@127.0.0.1:1/nothing")
    message = str(err.value)
    assert "hunter2" not in message and "bob:***@" in message and "\n" not in message


def test_migrations_dir_is_found() -> None:
    found = migrate.migrations_dir()
    assert (found / "env.py").is_file() and any((found / "versions").glob("0001_*.py"))
