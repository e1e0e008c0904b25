"""Revision 0005 (alerts, daemon heartbeats) up, down and up again, on SQLite
and PostgreSQL; what was there before stays."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from backupflows.catalog import migrate
from backupflows.catalog.db import create_catalog_engine
from tests.catalog_helpers import table_names

TABLES = {"alerts", "daemon_heartbeats"}


def _round_trip(url: str) -> None:
    assert migrate.upgrade(url, "0004") == "0004"
    engine = create_catalog_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO deployments (id, name, uri, include_ns, exclude_ns,"
                              " created_at) VALUES (1, 'd', 'mongodb://h/', '[]', '[]',"
                              " CURRENT_TIMESTAMP)"))
        assert not table_names(url) & TABLES
        assert migrate.upgrade(url, "0005") == "0005"
        assert table_names(url) >= TABLES
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO alerts (kind, subject, open_key, state, message,"
                              " data, opened_at, delivery_attempts) VALUES ('daemon_down',"
                              " 'daemon:x', 'daemon_down:daemon:x', 'open', 'm', '{}',"
                              " CURRENT_TIMESTAMP, 0)"))
        with pytest.raises(Exception, match="(?i)unique"), engine.begin() as conn:
            conn.execute(text("INSERT INTO alerts (kind, subject, open_key, state, message,"
                              " data, opened_at, delivery_attempts) VALUES ('daemon_down',"
                              " 'daemon:x', 'daemon_down:daemon:x', 'open', 'm', '{}',"
                              " CURRENT_TIMESTAMP, 0)"))
        assert migrate.downgrade(url, "0004") == "0004"
        assert not table_names(url) & TABLES
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM deployments")).scalar() == "d"
    finally:
        engine.dispose()
    assert migrate.upgrade(url) == migrate.head()
    assert table_names(url) >= TABLES


def test_0005_up_and_down_on_sqlite(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path}/c.db")


@pytest.mark.postgres
def test_0005_up_and_down_on_postgresql(postgres_url: str) -> None:
    _round_trip(postgres_url)
