"""Engines and sessions for the catalog.

- One engine per catalog URL per process. After a fork (Celery's prefork pool,
  ``multiprocessing``) the child drops the parent's pooled connections without
  closing them (``os.register_at_fork``), so no socket is shared between
  processes.
- SQLite: WAL journal, ``busy_timeout``, ``foreign_keys``; write transactions
  start with ``BEGIN IMMEDIATE`` so that concurrent writers wait for the lock
  instead of failing when a read lock cannot be upgraded. Read-only sessions
  (``session_scope(readonly=True)``) use a deferred ``BEGIN`` and never block.
- ``claim()`` is the conditional UPDATE that Celery tasks use to claim work:
  the UPDATE is the claim, ``True`` only for the one caller whose UPDATE hit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session

from backupflows.catalog.models import Base, utcnow
from backupflows.errors import ConfigError
from backupflows.redact import redact_uri

SQLITE_BUSY_TIMEOUT_MS = 30_000

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def catalog_url(url: str | None = None) -> str:
    """``url`` or the configured ``BACKUPFLOWS_CATALOG_URL``."""
    if url is not None:
        return url
    from backupflows.settings import get_settings

    return get_settings().catalog_url


def get_engine(url: str | None = None) -> Engine:
    """This process's engine for ``url`` (default: the configured catalog)."""
    url = catalog_url(url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_catalog_engine(url)
        return engine


def create_catalog_engine(url: str) -> Engine:
    """A new engine with the catalog's connection settings (use ``get_engine``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"bad catalog URL {redact_uri(url)!r}") from None
    try:
        if parsed.get_backend_name() == "sqlite":
            return _sqlite_engine(url, parsed.database)
        return create_engine(url, pool_pre_ping=True, future=True)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigError(f"catalog URL {redact_uri(url)!r}: unsupported driver ({exc})") from None


def _sqlite_engine(url: str, database: str | None) -> Engine:
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        readonly = conn.get_execution_options().get("backupflows_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


@contextmanager
def session_scope(url: str | None = None, *, readonly: bool = False) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    engine = get_engine(url)
    if readonly:
        engine = engine.execution_options(backupflows_readonly=True)
    session = Session(bind=engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def claim(
    session: Session,
    model: type[Base],
    ident: Any,
    *,
    expected: Mapping[str, Any],
    values: Mapping[str, Any],
) -> bool:
    """``UPDATE model SET values WHERE id = ident AND <expected>``; True if it hit.

    An expected value that is a tuple, list or set matches any of its members
    (``state IN (...)``); ``None`` matches NULL. Celery delivers at least once:
    the task whose claim returns True does the work, the others stop.
    """
    table = model.__table__
    conditions = [table.c.id == ident]
    for column, value in expected.items():
        col = table.c[column]
        if isinstance(value, tuple | list | set | frozenset):
            conditions.append(col.in_(list(value)))
        elif value is None:
            conditions.append(col.is_(None))
        else:
            conditions.append(col == value)
    stmt = update(table).where(*conditions).values(**dict(values))
    if "updated_at" in table.c and "updated_at" not in values:
        stmt = stmt.values(updated_at=utcnow())
    return session.execute(stmt).rowcount == 1


def dispose_engines(close: bool = False) -> None:
    """Drop every pooled connection; ``close=False`` after a fork (parent owns them)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=close)
        _engines.clear()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for engine in list(_engines.values()):
        engine.dispose(close=False)
    _engines.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
