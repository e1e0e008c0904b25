"""Alembic revisions: upgrade -> downgrade -> upgrade on SQLite and PostgreSQL,
and the revisions build exactly the tables the models describe."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from backupflows.catalog import migrate
from backupflows.catalog.db import create_catalog_engine
from backupflows.catalog.models import Base
from backupflows.errors import CatalogError
from tests.catalog_helpers import table_names

TABLES = {"deployments", "backup_jobs", "events",
          "sync_namespaces", "slice_ranges", "slices", "oplog_segments"}


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
    assert table_names(url) >= TABLES
    assert _schema_diff(url) == []  # revisions == models
    assert migrate.downgrade(url, "base") is None
    assert table_names(url) & TABLES == set()
    assert migrate.upgrade(url) == migrate.head()
    assert table_names(url) >= TABLES
    migrate.require_current(url)


def test_round_trip_on_sqlite(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path}/catalog.db")


@pytest.mark.postgres
def test_round_trip_on_postgresql(postgres_url: str) -> None:
    _round_trip(postgres_url)


def _step_through_0002(url: str) -> None:
    """0001 with a job -> 0002 (the job gets generation 1) -> back to 0001 (job kept)."""
    from sqlalchemy import text

    assert migrate.upgrade(url, "0001") == "0001"
    engine = create_catalog_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO deployments (id, name, uri, include_ns, exclude_ns,"
                              " created_at) VALUES (1, 'd', 'mongodb://h/', '[]', '[]',"
                              " CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO backup_jobs (id, deployment_id, state, created_at,"
                              " updated_at) VALUES (7, 1, 'routine', CURRENT_TIMESTAMP,"
                              " CURRENT_TIMESTAMP)"))
        assert migrate.upgrade(url, "0002") == "0002"
        with engine.connect() as conn:
            row = conn.execute(text("SELECT state, generation, head_lease_owner"
                                    " FROM backup_jobs WHERE id = 7")).one()
        assert tuple(row) == ("routine", 1, None)
        assert migrate.downgrade(url, "0001") == "0001"
        assert table_names(url) & {"slices", "slice_ranges", "sync_namespaces",
                               "oplog_segments"} == set()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT state FROM backup_jobs")).scalar_one() == "routine"
    finally:
        engine.dispose()


def test_0002_keeps_jobs_on_sqlite(tmp_path: Path) -> None:
    _step_through_0002(f"sqlite:///{tmp_path}/catalog.db")


@pytest.mark.postgres
def test_0002_keeps_jobs_on_postgresql(postgres_url: str) -> None:
    _step_through_0002(postgres_url)


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
