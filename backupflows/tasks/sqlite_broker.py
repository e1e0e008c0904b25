"""The embedded broker: a kombu transport on one SQLite file, at-least-once.

Broker URL ``sqlite:///<path>`` (the default is ``<data dir>/broker.db``).

Why not a stock kombu transport: with ``task_acks_late`` the message of a task
must survive the death of the worker that runs it. kombu's SQLAlchemy
transport (``sqla+sqlite://``) marks a message invisible when a worker takes
it and never makes it visible again, and its ``filesystem://`` transport
deletes (moves away) the file when a worker takes it: after ``kill -9`` of
that worker, both lose the message for good (measured; see README).
This transport behaves like kombu's Redis transport instead:

- taking a message stamps it ``taken_at``; an ack deletes the row; a reject
  with requeue (Celery's ``reject_on_worker_lost``) or a clean shutdown makes
  it visible again at once;
- a message taken by a process that died without acking becomes visible
  again ``visibility_timeout`` seconds after it was taken
  (``BACKUPFLOWS_VISIBILITY_TIMEOUT``, default 3600; tasks are idempotent);
- every take is one ``BEGIN IMMEDIATE`` transaction, so concurrent workers
  never take the same message twice within the timeout.

Limits: no fanout exchanges, so no Celery events (Flower) and no remote
control (``celery inspect``) on the embedded broker: use Redis for those.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, virtual

from backupflows.settings import Settings

SCHEME = "sqlite"
POLLING_INTERVAL = 0.1
DEFAULT_VISIBILITY_TIMEOUT = 3600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bf_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    delivery_tag TEXT,
    taken_at REAL
);
CREATE INDEX IF NOT EXISTS bf_messages_queue_id ON bf_messages (queue, id);
CREATE INDEX IF NOT EXISTS bf_messages_tag ON bf_messages (delivery_tag);
"""
_READY = "queue = ? AND (taken_at IS NULL OR taken_at < ?)"


def transport_options(settings: Settings) -> dict[str, Any]:
    """kombu transport options for the embedded broker."""
    return {"visibility_timeout": settings.visibility_timeout, "polling_interval": POLLING_INTERVAL}


def register() -> None:
    """Make ``sqlite://`` broker URLs resolve to this transport (idempotent)."""
    TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"


class Channel(virtual.Channel):
    """A kombu virtual channel whose queues are rows of ``bf_messages``."""

    supports_fanout = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._db_lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._db_pid = 0
        self._taken: dict[str, int] = {}  # delivery tag -> row id, for ack/reject

    # -- connection ---------------------------------------------------------
    @property
    def path(self) -> Path:
        vhost = self.connection.client.virtual_host or ""
        if not vhost or vhost == "/":
            raise ValueError("sqlite broker URL needs a file: sqlite:///path/to/broker.db")
        return Path(vhost)

    @property
    def visibility_timeout(self) -> float:
        options = self.connection.client.transport_options
        return float(options.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None or self._db_pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db, self._db_pid = db, os.getpid()
        return self._db

    def close(self) -> None:
        super().close()  # restores unacked messages through _restore
        with self._db_lock:
            if self._db is not None and self._db_pid == os.getpid():
                self._db.close()
            self._db = None

    # -- the primitives kombu's virtual transport asks for -----------------
    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        tag = message.get("properties", {}).get("delivery_tag")
        with self._db_lock:
            self._conn().execute(
                "INSERT INTO bf_messages (queue, payload, delivery_tag) VALUES (?, ?, ?)",
                (queue, json.dumps(message), tag),
            )

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        cutoff = time.time() - self.visibility_timeout
        with self._db_lock:
            db = self._conn()
            if db.execute(f"SELECT 1 FROM bf_messages WHERE {_READY} LIMIT 1",
                          (queue, cutoff)).fetchone() is None:
                raise Empty()
            row = self._take(db, queue, cutoff)
        if row is None:
            raise Empty()
        row_id, payload, taken_before = row
        message: dict[str, Any] = json.loads(payload)
        if taken_before is not None:
            message["redelivered"] = True
        tag = message.get("properties", {}).get("delivery_tag")
        if tag is not None:
            self._taken[tag] = row_id
        return message

    def _take(self, db: sqlite3.Connection, queue: str, cutoff: float) -> tuple[Any, ...] | None:
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                f"SELECT id, payload, taken_at FROM bf_messages WHERE {_READY} ORDER BY id LIMIT 1",
                (queue, cutoff),
            ).fetchone()
            if row is not None:
                db.execute("UPDATE bf_messages SET taken_at = ? WHERE id = ?", (time.time(), row[0]))
            db.execute("COMMIT")
            return row
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _size(self, queue: str) -> int:
        with self._db_lock:
            return self._conn().execute(
                f"SELECT count(*) FROM bf_messages WHERE {_READY}",
                (queue, time.time() - self.visibility_timeout),
            ).fetchone()[0]

    def _purge(self, queue: str) -> int:
        with self._db_lock:
            cursor = self._conn().execute(
                "DELETE FROM bf_messages WHERE queue = ? AND taken_at IS NULL", (queue,)
            )
            return cursor.rowcount

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        with self._db_lock:
            self._conn().execute("DELETE FROM bf_messages WHERE queue = ?", (queue,))

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return True

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        return None

    # -- acknowledgements ----------------------------------------------------
    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        self._forget(delivery_tag, "DELETE FROM bf_messages WHERE id = ?")
        super().basic_ack(delivery_tag, multiple=multiple)

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self._forget(delivery_tag, "UPDATE bf_messages SET taken_at = NULL WHERE id = ?")
        else:
            self._forget(delivery_tag, "DELETE FROM bf_messages WHERE id = ?")
        self.qos.ack(delivery_tag)  # drop it from the in-memory unacked set only

    def _restore(self, message: Any) -> None:
        """Clean shutdown: the unacked message becomes visible again, same row."""
        row_id = self._taken.pop(message.delivery_tag, None)
        if row_id is None:
            super()._restore(message)
            return
        with self._db_lock:
            self._conn().execute("UPDATE bf_messages SET taken_at = NULL WHERE id = ?", (row_id,))

    def _forget(self, delivery_tag: str, sql: str) -> None:
        row_id = self._taken.pop(delivery_tag, None)
        if row_id is None:
            return
        with self._db_lock:
            self._conn().execute(sql, (row_id,))


class Transport(virtual.Transport):
    """kombu transport ``sqlite://``: see the module docstring."""

    Channel = Channel
    polling_interval = POLLING_INTERVAL
    default_port = None
    driver_type = "sqlite"
    driver_name = "sqlite3"
    connection_errors = (*virtual.Transport.connection_errors, sqlite3.OperationalError)
    channel_errors = (*virtual.Transport.channel_errors, sqlite3.OperationalError)
    implements = virtual.Transport.implements.extend(
        asynchronous=False, exchange_type=frozenset(["direct", "topic"])
    )

    @property
    def default_connection_params(self) -> dict[str, Any]:
        return {"port": None, "hostname": None}  # a file, not a host

    def driver_version(self) -> str:
        return sqlite3.sqlite_version
