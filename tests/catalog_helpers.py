"""Helpers of the catalog migration tests."""

from __future__ import annotations

from sqlalchemy import inspect

from backupflows.catalog.db import create_catalog_engine


def table_names(url: str) -> set[str]:
    """The tables of the catalog at ``url`` (``alembic_version`` left out)."""
    engine = create_catalog_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
