"""Reading the head: catalog, streaming export in ``_id`` order, content
hashes, missing ``_id``s and the changes since a mark.

Every iterator streams rows from SQLite: memory does not depend on the size
of a collection. On the store's own connection, consume an iterator before
the next write; use ``HeadStore.snapshot()`` to read while writing.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Iterator

from backupflows.contenthash import ContentHash, doc_digest
from backupflows.errors import HeadError
from backupflows.head.catalog import Collection, read_all, read_builds, read_indexes
from backupflows.head.optime import Optime

CHANGED_KEYS_IN_MEMORY = 200_000  # changed keys sorted in memory (a few MB), see changes_since
_IN_CHUNK = 500


def _doc_first(change: tuple[bytes, bytes | None]) -> tuple[bytes, bool]:
    return change[0], change[1] is None


class HeadReader:
    """Read API over one SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def _meta(self, key: str) -> int:
        return self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0]

    def optime(self) -> Optime:
        """The applied optime: every entry up to it is reflected."""
        return Optime(int(self._meta("ts")), int(self._meta("t")))

    def mark(self) -> int:
        """The current change sequence: changes committed later have a
        greater sequence (see ``changes_since``)."""
        return int(self._meta("seq"))

    def collections(self) -> list[Collection]:
        """Every namespace (collections, views, time-series views), by name."""
        return read_all(self.conn)

    def collection(self, db: str, name: str) -> Collection | None:
        for c in read_all(self.conn):
            if (c.db, c.name) == (db, name):
                return c
        return None

    def require(self, db: str, name: str) -> Collection:
        c = self.collection(db, name)
        if c is None:
            raise HeadError(f"no collection {db}.{name} in the head")
        return c

    def indexes(self, c: Collection) -> list[bytes]:
        """Index specs (raw BSON) in creation order, as listIndexes gives them."""
        return [spec for _, spec in read_indexes(self.conn, c.cid)]

    def index_builds(self, c: Collection) -> list[tuple[bytes, bytes]]:
        """In-progress two-phase builds: (build UUID, raw array of specs)."""
        return read_builds(self.conn, c.cid)

    def export(self, c: Collection) -> Iterator[bytes]:
        """The raw documents of ``c`` in the server's ``_id`` order."""
        cur = self.conn.execute("SELECT doc FROM docs WHERE cid=? ORDER BY k", (c.cid,))
        cur.arraysize = 256
        while rows := cur.fetchmany():
            for (doc,) in rows:
                yield bytes(doc)

    def export_keyed(self, c: Collection) -> Iterator[tuple[bytes, bytes]]:
        """(``_id`` key, raw document) in key order."""
        cur = self.conn.execute("SELECT k, doc FROM docs WHERE cid=? ORDER BY k", (c.cid,))
        cur.arraysize = 256
        while rows := cur.fetchmany():
            for k, doc in rows:
                yield bytes(k), bytes(doc)

    def export_digested(self, c: Collection) -> Iterator[tuple[bytes, bytes, int]]:
        """(``_id`` key, raw document, its ``doc_digest``) in key order: the
        digest stored with the document, computed here only for rows written
        before the head stored digests (schema version 1)."""
        cur = self.conn.execute("SELECT k, doc, dg FROM docs WHERE cid=? ORDER BY k", (c.cid,))
        cur.arraysize = 256
        from_bytes = int.from_bytes
        while rows := cur.fetchmany():
            for k, doc, dg in rows:
                doc = bytes(doc)
                yield bytes(k), doc, (from_bytes(dg, "big") if dg is not None
                                      else doc_digest(doc))

    def content_hash(self, c: Collection) -> ContentHash:
        """The incrementally kept count and hash of ``c`` (cheap)."""
        row = self.conn.execute("SELECT count, hash FROM collections WHERE cid=?",
                                (c.cid,)).fetchone()
        if row is None:
            raise HeadError(f"collection {c.ns} is no longer in the head")
        return ContentHash.from_hex(row[0], row[1])

    def recompute_hash(self, c: Collection) -> ContentHash:
        """The count and hash of ``c`` computed from scratch from its documents."""
        return ContentHash.of(self.export(c))

    def missing(self, c: Collection) -> Iterator[bytes]:
        """Raw ``{_id: ...}`` documents of updates that found no document."""
        rows = self.conn.execute("SELECT id FROM missing WHERE cid=? ORDER BY k", (c.cid,))
        for (rid,) in rows:
            yield bytes(rid)

    def missing_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM missing").fetchone()[0])

    def changes_since(self, mark: int, c: Collection) -> Iterator[tuple[bytes, bytes | None]]:
        """(``_id`` key, raw document or None when deleted) of every document of
        ``c`` upserted or deleted after ``mark``, in key order.

        When ``c.generation > mark`` the collection was created, renamed or
        emptied after the mark: a snapshot must store it whole instead.
        Deletes older than a pruned mark are no longer reported.

        Cost follows the change, not the collection: up to
        ``CHANGED_KEYS_IN_MEMORY`` changed keys are found through the
        ``(cid, seq)`` index, sorted here and their documents read in key
        order; past that (a large share of the collection changed) one scan
        of the collection in key order filters on ``seq`` (memory stays
        bounded either way).
        """
        keys = [bytes(k) for (k,) in self.conn.execute(
            "SELECT k FROM docs WHERE cid=? AND seq>? LIMIT ?",
            (c.cid, mark, CHANGED_KEYS_IN_MEMORY + 1))]
        if len(keys) <= CHANGED_KEYS_IN_MEMORY:
            keys.sort()
            upserts = self._docs_of(c, keys)
        else:
            del keys
            upserts = ((bytes(k), bytes(d)) for k, d in self.conn.execute(
                "SELECT k, doc FROM docs WHERE cid=? AND seq>? ORDER BY k", (c.cid, mark)))
        deletes = ((bytes(k), None) for (k,) in self.conn.execute(
            "SELECT k FROM tombstones WHERE cid=? AND seq>? ORDER BY k", (c.cid, mark)))
        last: bytes | None = None
        # a key with both a document and a tombstone newer than the mark was
        # deleted, then written again (a delete removes the document): the
        # document wins, so documents sort before tombstones of the same key
        for k, doc in heapq.merge(upserts, deletes, key=_doc_first):
            if k == last:
                continue
            last = k
            yield k, doc

    def _docs_of(self, c: Collection, keys: list[bytes]) -> Iterator[tuple[bytes, bytes]]:
        """(key, document) of sorted ``keys`` (all present), in key order."""
        for i in range(0, len(keys), _IN_CHUNK):
            chunk = keys[i:i + _IN_CHUNK]
            sql = ("SELECT k, doc FROM docs WHERE cid=? AND k IN (" + ",".join("?" * len(chunk))
                   + ") ORDER BY k")
            for k, d in self.conn.execute(sql, (c.cid, *chunk)):
                yield bytes(k), bytes(d)

    def integrity_check(self) -> list[str]:
        """Compare every collection's kept hash with a recomputation from its
        documents, and every stored document digest with its document."""
        problems = []
        for c in self.collections():
            if not c.holds_documents:
                continue
            kept, real = self.content_hash(c), ContentHash()
            bad_digests = 0
            cur = self.conn.execute("SELECT doc, dg FROM docs WHERE cid=? ORDER BY k", (c.cid,))
            for doc, dg in cur:
                d = doc_digest(bytes(doc))
                real.add_digest(d)
                if dg is not None and int.from_bytes(dg, "big") != d:
                    bad_digests += 1
            if (kept.count, kept.total) != (real.count, real.total):
                problems.append(f"{c.ns}: kept {kept.count}/{kept.hexdigest()[:12]} "
                                f"!= recomputed {real.count}/{real.hexdigest()[:12]}")
            if bad_digests:
                problems.append(f"{c.ns}: {bad_digests} stored document digest(s) do not "
                                f"match their documents")
        return problems
