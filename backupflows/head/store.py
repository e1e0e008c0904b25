"""HeadStore: the daemon's local copy of a replica set, on SQLite.

Reads go through ``HeadReader`` (on the store's own connection between
transactions, or on a ``snapshot()``: a separate read transaction that sees
one committed state while the applier keeps writing). Writes go through
``transaction()`` (a ``HeadWriter``); after each one, a background thread
checkpoints the WAL (``checkpoint``), so the writer does not wait for the
disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import bson

from backupflows.bsonorder import KeyError_, id_key, raw_id
from backupflows.errors import HeadError
from backupflows.head import schema
from backupflows.head.catalog import COLLECTION, TYPES, Catalog, Collection
from backupflows.head.checkpoint import Checkpointer
from backupflows.head.export import HeadReader
from backupflows.head.optime import Optime
from backupflows.head.writer import HeadWriter

DEFAULT_ID_INDEX = bson.encode({"v": 2, "key": {"_id": 1}, "name": "_id_"})


class HeadStore(HeadReader):
    """A head database at ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.conn = schema.connect(self.path)
        self.catalog = Catalog(self.conn)
        self._checkpointer: Checkpointer | None = None
        super().__init__(self.conn)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        self.conn.close()

    def __enter__(self) -> HeadStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --

    @contextmanager
    def snapshot(self) -> Iterator[HeadReader]:
        """A consistent read view (its own connection and read transaction)."""
        conn = schema.connect(self.path, create=False)
        try:
            conn.execute("BEGIN")
            conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()
            yield HeadReader(conn)
        finally:
            conn.execute("ROLLBACK")
            conn.close()

    # -- writing --

    @contextmanager
    def transaction(self) -> Iterator[HeadWriter]:
        """A write transaction: committed when the block ends normally,
        rolled back (catalog reloaded) when it raises."""
        w = HeadWriter(self.conn, self.catalog)
        try:
            yield w
        except BaseException:
            w.rollback()
            raise
        w.commit()
        self.checkpoint_soon()

    def checkpoint_soon(self) -> None:
        """Hand the WAL checkpoint to the background thread (see checkpoint):
        ``transaction()`` does after each commit; so should code that writes
        through ``conn`` directly (the benchmarks' plain writes)."""
        cp = self._checkpointer
        if cp is None:
            page_size = self.conn.execute("PRAGMA page_size").fetchone()[0]
            cp = self._checkpointer = Checkpointer(self.path, page_size)
        cp.catch_up(self.conn)
        cp.poke()

    def prune_tombstones(self, mark: int) -> int:
        """Forget deletes recorded at or before ``mark``; returns how many."""
        with self.transaction() as w:
            return w.conn.execute("DELETE FROM tombstones WHERE seq<=?", (mark,)).rowcount

    def ensure_collection(self, db: str, name: str, *, uuid: bytes | None = None,
                          type: str = COLLECTION, options: bytes = b"\x05\x00\x00\x00\x00",
                          indexes: Iterable[bytes] = (DEFAULT_ID_INDEX,)) -> Collection:
        """Create a namespace as listCollections/listIndexes describe it (for
        initial sync and dump loading); an existing one is returned as is."""
        if type not in TYPES:
            raise HeadError(f"unknown collection type {type!r}")
        with self.transaction() as w:
            return create_collection(w, db, name, uuid, type, options, indexes)

    def load_slice(self, db: str, name: str, raw_docs: Iterable[bytes],
                   chunk: int = 2000) -> int:
        """Upsert a slice of raw documents into an existing collection, in one
        transaction; loading the same slice twice gives the same head."""
        c = self.catalog.get(db, name)
        if c is None or not c.holds_documents:
            raise HeadError(f"no collection {db}.{name} in the head to load a slice into")
        n = 0
        with self.transaction() as w:
            buf: list[tuple[bytes, bytes]] = []
            for raw in raw_docs:
                buf.append((_doc_key(raw, c), bytes(raw)))
                if len(buf) >= chunk:
                    n += _load_chunk(w, c, buf)
                    buf = []
            n += _load_chunk(w, c, buf)
        return n

    def resolve_missing(self, db: str, name: str, found: Iterable[bytes],
                        gone: Iterable[bytes] = ()) -> None:
        """Validation's refetch result: ``found`` documents are upserted (and
        leave the missing set), ``gone`` raw ``{_id}`` documents were not found
        at the source and leave the missing set."""
        c = self.catalog.get(db, name)
        if c is None:
            raise HeadError(f"no collection {db}.{name} in the head")
        with self.transaction() as w:
            for raw in found:
                w.put(c, _doc_key(raw, c), bytes(raw))
            w.flush()
            for raw in gone:
                w.conn.execute("DELETE FROM missing WHERE cid=? AND k=?",
                               (c.cid, _doc_key(raw, c)))


def _doc_key(raw: bytes, c: Collection) -> bytes:
    try:
        return id_key(raw)
    except KeyError_ as exc:
        raise HeadError(f"bad document for {c.ns}: {exc}") from None


def _load_chunk(w: HeadWriter, c: Collection, buf: list[tuple[bytes, bytes]]) -> int:
    for k, raw in buf:
        w.put_new(c, k, raw)
    w.forget()
    return len(buf)


def create_collection(w: HeadWriter, db: str, name: str, uuid: bytes | None, type_: str,
                      options: bytes, indexes: Iterable[bytes]) -> Collection:
    """Create a namespace unless it exists (then return the existing one)."""
    existing = w.catalog.get(db, name)
    if existing is not None:
        return existing
    w.flush()
    c = w.catalog.create(db, name, uuid, type_, options, w.seq)
    for spec in indexes:
        w.catalog.add_index(c, spec)
    return c


__all__ = ["HeadStore", "Optime", "DEFAULT_ID_INDEX", "create_collection", "raw_id"]
