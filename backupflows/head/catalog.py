"""The head's collection catalog: rows of ``collections``, ``indexes`` and
``index_builds``, with an in-memory index by namespace and by UUID.

The in-memory ``Catalog`` mirrors the committed rows plus the changes of the
open write transaction; a rollback reloads it from the database.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from backupflows.contenthash import ContentHash
from backupflows.head import rawdoc

COLLECTION, VIEW, TIMESERIES = "collection", "view", "timeseries"
TYPES = (COLLECTION, VIEW, TIMESERIES)
ZERO_HASH = "0" * 64


@dataclass
class Collection:
    """One namespace of the head: a collection, a view or a time-series view."""

    cid: int
    db: str
    name: str
    uuid: bytes | None
    type: str
    options: bytes
    generation: int
    count: int = 0
    hash: str = ZERO_HASH

    @property
    def ns(self) -> str:
        return f"{self.db}.{self.name}"

    @property
    def holds_documents(self) -> bool:
        return self.type == COLLECTION

    def content_hash(self) -> ContentHash:
        return ContentHash.from_hex(self.count, self.hash)


_COLUMNS = "cid, db, name, uuid, type, options, generation, count, hash"


def _row(row: tuple) -> Collection:
    cid, db, name, uuid, type_, options, generation, count, hash_ = row
    return Collection(cid, db, name, bytes(uuid) if uuid is not None else None, type_,
                      bytes(options), generation, count, hash_)


def read_all(conn: sqlite3.Connection) -> list[Collection]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM collections ORDER BY db, name")
    return [_row(r) for r in rows]


class Catalog:
    """In-memory view of the collection rows, by cid, namespace and UUID."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.reload()

    def reload(self) -> None:
        self.by_cid: dict[int, Collection] = {}
        self.by_ns: dict[tuple[str, str], Collection] = {}
        self.by_uuid: dict[bytes, Collection] = {}
        for c in read_all(self._conn):
            self._index(c)

    def _index(self, c: Collection) -> None:
        self.by_cid[c.cid] = c
        self.by_ns[(c.db, c.name)] = c
        if c.uuid is not None:
            self.by_uuid[c.uuid] = c

    def _unindex(self, c: Collection) -> None:
        self.by_cid.pop(c.cid, None)
        if self.by_ns.get((c.db, c.name)) is c:
            del self.by_ns[(c.db, c.name)]
        if c.uuid is not None and self.by_uuid.get(c.uuid) is c:
            del self.by_uuid[c.uuid]

    def get(self, db: str, name: str) -> Collection | None:
        return self.by_ns.get((db, name))

    def in_db(self, db: str) -> list[Collection]:
        return [c for (d, _), c in sorted(self.by_ns.items()) if d == db]

    # -- mutations (SQL + memory; the caller holds the write transaction) --

    def create(self, db: str, name: str, uuid: bytes | None, type_: str,
               options: bytes, generation: int) -> Collection:
        cur = self._conn.execute(
            "INSERT INTO collections (db, name, uuid, type, options, generation, count, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
            (db, name, uuid, type_, options, generation, ZERO_HASH))
        c = Collection(int(cur.lastrowid or 0), db, name, uuid, type_, options, generation)
        self._index(c)
        return c

    def drop(self, c: Collection) -> None:
        for table in ("docs", "tombstones", "missing", "indexes", "index_builds"):
            self._conn.execute(f"DELETE FROM {table} WHERE cid=?", (c.cid,))
        self._conn.execute("DELETE FROM collections WHERE cid=?", (c.cid,))
        self._unindex(c)

    def rename(self, c: Collection, db: str, name: str, generation: int) -> None:
        self._unindex(c)
        c.db, c.name, c.generation = db, name, generation
        self._conn.execute("UPDATE collections SET db=?, name=?, generation=? WHERE cid=?",
                           (db, name, generation, c.cid))
        self._index(c)

    def set_uuid(self, c: Collection, uuid: bytes | None) -> None:
        self._unindex(c)
        c.uuid = uuid
        self._conn.execute("UPDATE collections SET uuid=? WHERE cid=?", (uuid, c.cid))
        self._index(c)

    def set_options(self, c: Collection, options: bytes) -> None:
        c.options = options
        self._conn.execute("UPDATE collections SET options=? WHERE cid=?", (options, c.cid))

    def set_type(self, c: Collection, type_: str) -> None:
        c.type = type_
        self._conn.execute("UPDATE collections SET type=? WHERE cid=?", (type_, c.cid))

    def set_generation(self, c: Collection, generation: int) -> None:
        c.generation = generation
        self._conn.execute("UPDATE collections SET generation=? WHERE cid=?",
                           (generation, c.cid))

    def set_hash(self, c: Collection, h: ContentHash) -> None:
        c.count, c.hash = h.count, h.hexdigest()
        self._conn.execute("UPDATE collections SET count=?, hash=? WHERE cid=?",
                           (c.count, c.hash, c.cid))

    # -- indexes --

    def indexes(self, c: Collection) -> list[tuple[str, bytes]]:
        return read_indexes(self._conn, c.cid)

    def add_index(self, c: Collection, spec: bytes) -> None:
        """Append index ``spec``. An index of the same name is replaced and
        moves to the end: replaying an oplog over a later state, that is where
        the later create of the index put it (so index order converges)."""
        name = index_name(spec)
        self._conn.execute("DELETE FROM indexes WHERE cid=? AND name=?", (c.cid, name))
        pos = self._conn.execute("SELECT COALESCE(MAX(pos), -1) + 1 FROM indexes WHERE cid=?",
                                 (c.cid,)).fetchone()[0]
        self._conn.execute("INSERT INTO indexes (cid, name, pos, spec) VALUES (?, ?, ?, ?)",
                           (c.cid, name, pos, spec))

    def replace_index(self, c: Collection, name: str, spec: bytes) -> None:
        self._conn.execute("UPDATE indexes SET spec=? WHERE cid=? AND name=?",
                           (spec, c.cid, name))

    def drop_index(self, c: Collection, name: str) -> bool:
        cur = self._conn.execute("DELETE FROM indexes WHERE cid=? AND name=?", (c.cid, name))
        return cur.rowcount > 0

    def start_build(self, c: Collection, build_uuid: bytes, specs: bytes) -> None:
        self._conn.execute("INSERT OR REPLACE INTO index_builds (cid, build_uuid, specs)"
                           " VALUES (?, ?, ?)", (c.cid, build_uuid, specs))

    def finish_build(self, c: Collection, build_uuid: bytes) -> None:
        self._conn.execute("DELETE FROM index_builds WHERE cid=? AND build_uuid=?",
                           (c.cid, build_uuid))


def read_indexes(conn: sqlite3.Connection, cid: int) -> list[tuple[str, bytes]]:
    rows = conn.execute("SELECT name, spec FROM indexes WHERE cid=? ORDER BY pos", (cid,))
    return [(name, bytes(spec)) for name, spec in rows]


def read_builds(conn: sqlite3.Connection, cid: int) -> list[tuple[bytes, bytes]]:
    rows = conn.execute("SELECT build_uuid, specs FROM index_builds WHERE cid=?"
                        " ORDER BY build_uuid", (cid,))
    return [(bytes(u), bytes(s)) for u, s in rows]


def index_name(spec: bytes) -> str:
    found = rawdoc.field(spec, b"name")
    if found is None or found[0] != 0x02:
        raise ValueError("index spec has no string 'name'")
    return rawdoc.read_string(spec, found[1])
