"""The head's SQLite schema (version 2).

Tables:
- ``meta``: schema version, applied optime (``ts`` packed as seconds << 32 |
  increment, and the term ``t``), the change sequence ``seq``.
- ``collections``: the catalog. ``cid`` is never reused. ``options`` is raw
  BSON in the server's field order. ``type`` is collection, view or
  timeseries (views and time-series views hold no documents). ``generation``
  is the change sequence at which the collection was (re)created or renamed.
  ``count``/``hash`` are the additive content hash (backupflows.contenthash),
  kept current in the transaction that changes the documents.
- ``indexes``: the index specs as the server lists them, in creation order.
- ``index_builds``: two-phase index builds started but not yet committed.
- ``docs``: raw BSON documents keyed by (cid, order-preserving ``_id`` key),
  WITHOUT ROWID so a collection is one contiguous key range in ``_id`` order;
  ``seq`` is the change sequence of the transaction that last wrote the row;
  ``dg`` the document's 32-byte BLAKE2b digest (``backupflows.contenthash``),
  written with the document, so a snapshot sums a block's content without
  hashing its documents again (NULL only in rows of a head upgraded from
  version 1: readers compute those).
- ``tombstones``: deletes with their change sequence, for incremental
  snapshots (pruned up to a mark).
- ``missing``: ``_id``s of updates that found no document (validation
  refetches them).
- ``txn_entries``: the raw entries of transactions not yet applied
  (``partialTxn`` chains, prepared transactions), keyed by session/txnNumber.

Versions: 1 had no ``docs.dg``; opening a version-1 head upgrades it in
place (one ``ALTER TABLE``, no rewrite).
"""

from __future__ import annotations

import sqlite3

from backupflows.errors import HeadError

SCHEMA_VERSION = 2
PAGE_SIZE = 16384
WAL_CHECKPOINT_BYTES = 64 << 20

_DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value
);
CREATE TABLE IF NOT EXISTS collections (
    cid INTEGER PRIMARY KEY AUTOINCREMENT,
    db TEXT NOT NULL,
    name TEXT NOT NULL,
    uuid BLOB UNIQUE,
    type TEXT NOT NULL,
    options BLOB NOT NULL,
    generation INTEGER NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    hash TEXT NOT NULL,
    UNIQUE (db, name)
);
CREATE TABLE IF NOT EXISTS indexes (
    cid INTEGER NOT NULL,
    name TEXT NOT NULL,
    pos INTEGER NOT NULL,
    spec BLOB NOT NULL,
    PRIMARY KEY (cid, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_builds (
    cid INTEGER NOT NULL,
    build_uuid BLOB NOT NULL,
    specs BLOB NOT NULL,
    PRIMARY KEY (cid, build_uuid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS docs (
    cid INTEGER NOT NULL,
    k BLOB NOT NULL,
    doc BLOB NOT NULL,
    seq INTEGER NOT NULL,
    dg BLOB,
    PRIMARY KEY (cid, k)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS docs_seq ON docs (cid, seq);
CREATE TABLE IF NOT EXISTS tombstones (
    cid INTEGER NOT NULL,
    k BLOB NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (cid, k)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS missing (
    cid INTEGER NOT NULL,
    k BLOB NOT NULL,
    id BLOB NOT NULL,
    PRIMARY KEY (cid, k)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS txn_entries (
    txn BLOB NOT NULL,
    ts INTEGER NOT NULL,
    entry BLOB NOT NULL,
    PRIMARY KEY (txn, ts)
) WITHOUT ROWID;
"""

_DEFAULTS = (("schema_version", SCHEMA_VERSION), ("ts", 0), ("t", -1), ("seq", 0))


def connect(path: str, create: bool = True) -> sqlite3.Connection:
    """Open (creating if needed) a head database and check its version.
    ``create=False`` opens an existing head for reading without taking the
    write lock."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    except sqlite3.Error as exc:
        raise HeadError(f"cannot open head {path}: {exc}") from None
    try:
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit appends to the WAL without fsync (checkpoints
        # fsync). A crash of the process loses nothing; a power loss may lose
        # the last commits but never tears one (WAL frames are checksummed
        # and a transaction counts only up to its commit frame), and each
        # commit carries the optime of exactly the changes it holds: the head
        # reopens at an earlier consistent position and the applier, which is
        # idempotent, re-applies from there.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA temp_store=MEMORY")
        # Checkpoint every 64 MB of WAL instead of 16 MB: pages written by
        # several batches are copied to the database once. HeadStore runs
        # checkpoints in a background thread; this is the writer's fallback.
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_BYTES // PAGE_SIZE}")
        if create:
            _create(conn)
        else:
            _check_version(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise HeadError(f"cannot open head {path}: {exc}") from None
    return conn


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt in _DDL.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        for key, value in _DEFAULTS:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
        _check_version(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _check_version(conn: sqlite3.Connection) -> None:
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    if row is not None and row[0] == 1:
        _upgrade_from_1(conn)
        return
    if row is None or row[0] != SCHEMA_VERSION:
        raise HeadError(f"head schema version {row and row[0]} is not {SCHEMA_VERSION}")


def _upgrade_from_1(conn: sqlite3.Connection) -> None:
    """Version 1 -> 2: add ``docs.dg`` (existing rows keep NULL)."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row[0] == 1:  # another process may have upgraded while we waited
            conn.execute("ALTER TABLE docs ADD COLUMN dg BLOB")
            conn.execute("UPDATE meta SET value=2 WHERE key='schema_version'")
        if own:
            conn.execute("COMMIT")
    except BaseException:
        if own:
            conn.execute("ROLLBACK")
        raise
