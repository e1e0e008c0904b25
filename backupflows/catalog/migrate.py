"""Catalog schema migrations, with the alembic ``Config`` built in code.

``upgrade(url)``, ``downgrade(url, rev)`` and ``current(url)`` run the
revisions in ``migrations/``. That directory is found in a source checkout
(editable install) next to the package, or, after a regular ``pip install``,
where the wheel put it as data files (``<prefix>/share/backupflows/migrations``).
Connection problems become one-line ``CatalogError``s.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy.exc import DBAPIError, OperationalError

import backupflows
from backupflows.catalog.db import catalog_url, create_catalog_engine
from backupflows.errors import CatalogError
from backupflows.redact import redact_text, redact_uri

_MARKER = "backupflows"  # env.py of ours mentions it; another project's would not


def migrations_dir() -> Path:
    """Where ``env.py`` and ``versions/`` are (source checkout or installed data)."""
    for candidate in _candidates():
        env = candidate / "env.py"
        if env.is_file() and _MARKER in env.read_text(encoding="utf-8"):
            return candidate
    raise CatalogError("alembic migrations not found: reinstall backupflows (pip install .)")


def _candidates() -> Iterator[Path]:
    yield Path(backupflows.__file__).resolve().parent.parent / "migrations"
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        yield Path(prefix) / "share" / "backupflows" / "migrations"
    try:
        files = metadata.files("backupflows") or []
    except metadata.PackageNotFoundError:
        return
    for file in files:
        if file.as_posix().endswith("share/backupflows/migrations/env.py"):
            yield Path(str(file.locate())).resolve().parent


def alembic_config(url: str | None = None) -> Config:
    """An alembic ``Config`` for ``url`` (default: the configured catalog)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["url"] = catalog_url(url)
    return config


@contextmanager
def _reported(url: str) -> Iterator[None]:
    try:
        yield
    except OperationalError as exc:
        reason = redact_text(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc))
        raise CatalogError(f"cannot use catalog {redact_uri(url)}: {reason}") from None
    except DBAPIError as exc:
        reason = redact_text(str(exc.orig or exc).strip().splitlines()[0])
        raise CatalogError(f"catalog {redact_uri(url)}: {reason}") from None
    except CommandError as exc:
        raise CatalogError(f"catalog {redact_uri(url)}: {exc}") from None


def upgrade(url: str | None = None, rev: str = "head") -> str | None:
    """Migrate the catalog up to ``rev``; returns the revision it is at."""
    config = alembic_config(url)
    with _reported(config.attributes["url"]):
        command.upgrade(config, rev)
    return current(url)


def downgrade(url: str | None, rev: str) -> str | None:
    """Migrate the catalog down to ``rev`` (``base`` removes every table)."""
    config = alembic_config(url)
    with _reported(config.attributes["url"]):
        command.downgrade(config, rev)
    return current(url)


def current(url: str | None = None) -> str | None:
    """The catalog's revision, ``None`` when it has never been migrated."""
    url = catalog_url(url)
    engine = create_catalog_engine(url)
    try:
        with _reported(url), engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision shipped with this version of backupflows."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def require_current(url: str | None = None) -> None:
    """Raise ``CatalogError`` unless the catalog is at the shipped head revision."""
    at, want = current(url), head()
    if at != want:
        raise CatalogError(
            f"catalog is at revision {at or 'none'}, this backupflows needs {want}: "
            "run 'backupflows db upgrade'"
        )
