"""Fixtures of the operator tests: a migrated SQLite catalog with one
deployment (its URI holds a password) and its job on daemon ``d1``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backupflows.catalog import migrate
from backupflows.jobs import service
from tests.jobs.conftest import embedded_stack, source_client  # noqa: F401 - flow fixtures

PASSWORD = "s3cr3t-Pa55word"
URI = f"mongodb://backup:{PASSWORD}@h1:27017,h2:27017/?replicaSet=rs0"


@pytest.fixture
def catalog(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The id of the job of deployment ``prod`` (initial sync, daemon ``d1``)."""
    monkeypatch.setenv("BACKUPFLOWS_DAEMON_ID", "d1")
    from backupflows.settings import reset_settings

    reset_settings()
    migrate.upgrade()
    service.add_deployment("prod", URI, [], [])
    yield service.start_job("prod", "d1").job_id
