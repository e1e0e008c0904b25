"""One write transaction on the head.

Document writes go through a per-transaction cache (reads of the same
``_id`` see earlier writes of the transaction) and reach SQLite in sorted
``executemany`` batches at ``flush``; the content hash of every touched
collection is adjusted incrementally, and the change sequence, tombstones,
missing ``_id``s and the applied optime are written in the same SQLite
transaction, so a crash never separates data from position.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from backupflows.contenthash import ContentHash, doc_digest
from backupflows.head.catalog import Catalog, Collection

_MOD = 1 << 256
_CHUNK = 500

_INSERT = "INSERT INTO docs (cid, k, doc, seq, dg) VALUES (?, ?, ?, ?, ?)"
_UPDATE = "UPDATE docs SET doc=?, seq=?, dg=? WHERE cid=? AND k=?"
_DELETE = "DELETE FROM docs WHERE cid=? AND k=?"
_UPSERT = ("INSERT INTO docs (cid, k, doc, seq, dg) VALUES (?, ?, ?, ?, ?)"
           " ON CONFLICT (cid, k) DO UPDATE SET doc=excluded.doc, seq=excluded.seq,"
           " dg=excluded.dg")
_UNKNOWN = b""  # cache sentinel: state not read (a real document is never empty)


class HeadWriter:
    """Writes of one transaction; obtained from ``HeadStore.transaction()``.

    Contract: catalog operations flush pending document writes first; the
    caller commits or rolls back exactly once.
    """

    def __init__(self, conn: sqlite3.Connection, catalog: Catalog) -> None:
        self.conn = conn
        self.catalog = catalog
        conn.execute("BEGIN IMMEDIATE")
        self.seq = int(self._meta("seq")) + 1
        self._cache: dict[tuple[int, bytes], bytes | None] = {}
        self._writes: dict[tuple[int, bytes], bytes | None] = {}
        # digests of documents read (docs.dg) or written in this transaction,
        # with the document each belongs to (see digest)
        self._dg: dict[tuple[int, bytes], tuple[bytes, int]] = {}
        # insertion-ordered (a dict): keys that arrive sorted sort in linear time
        self._blind: dict[tuple[int, bytes], None] = {}
        self._hash: dict[int, list[int]] = {}
        self._missing: dict[tuple[int, bytes], bytes | None] = {}
        self._missing_possible = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM missing)").fetchone()[0] == 1
        self._optime: tuple[int, int] | None = None
        self._select_sql: dict[int, str] = {}

    def _meta(self, key: str) -> int:
        return self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0]

    # -- documents --

    def get(self, c: Collection, key: bytes) -> bytes | None:
        """The current raw document of ``key`` in ``c`` (None if absent)."""
        ck = (c.cid, key)
        if ck in self._writes:
            return self._writes[ck]
        if ck in self._cache:
            return self._cache[ck]
        row = self.conn.execute("SELECT doc, dg FROM docs WHERE cid=? AND k=?", ck).fetchone()
        if row is None:
            self._cache[ck] = None
            return None
        doc, dg = row
        self._cache[ck] = doc
        if dg is not None:
            self._dg[ck] = (doc, int.from_bytes(dg, "big"))
        return doc

    def digest(self, c: Collection, key: bytes, doc: bytes) -> int:
        """``doc_digest(doc)`` of ``doc``, the current document of ``key``
        as ``get`` returned it: the digest stored with it (read with it) or
        computed when this transaction wrote it, else computed now."""
        known = self._dg.get((c.cid, key))
        if known is not None and known[0] is doc:
            return known[1]
        return doc_digest(doc)

    def prefetch(self, cid: int, keys: Iterable[bytes]) -> None:
        """Read the documents (and stored digests) of many keys of one
        collection in few queries."""
        cache, writes, known = self._cache, self._writes, self._dg
        # sorted: each chunk is one key range (fewer pages per query)
        todo = sorted(k for k in set(keys) if (cid, k) not in writes and (cid, k) not in cache)
        from_bytes = int.from_bytes
        for i in range(0, len(todo), _CHUNK):
            chunk = todo[i:i + _CHUNK]
            for k in chunk:
                cache[(cid, k)] = None
            for k, doc, dg in self.conn.execute(self._select(len(chunk)), (cid, *chunk)):
                ck = (cid, k)
                cache[ck] = doc
                if dg is not None:
                    known[ck] = (doc, from_bytes(dg, "big"))

    def _select(self, n: int) -> str:
        sql = self._select_sql.get(n)
        if sql is None:
            sql = ("SELECT k, doc, dg FROM docs WHERE cid=? AND k IN ("
                   + ",".join("?" * n) + ")")
            self._select_sql[n] = sql
        return sql

    def put(self, c: Collection, key: bytes, raw: bytes, old: bytes | None = None,
            known: bool = False, old_digest: int | None = None,
            digest: int | None = None) -> None:
        """Insert or replace the document of ``key``. ``old``/``known`` let a
        caller that already read the current document skip a second read;
        ``old_digest``/``digest``, a caller that already has the ``doc_digest``
        of ``old``/``raw`` skip computing it again."""
        if not known:
            old = self.get(c, key)
        h = self._hash.get(c.cid)
        if h is None:
            h = self._hash[c.cid] = [0, 0]
        if old is not None:
            h[1] -= self.digest(c, key, old) if old_digest is None else old_digest
        else:
            h[0] += 1
        if digest is None:
            digest = doc_digest(raw)
        h[1] += digest
        self._writes[(c.cid, key)] = raw
        self._dg[(c.cid, key)] = (raw, digest)
        if self._missing_possible:
            self._missing[(c.cid, key)] = None

    def put_new(self, c: Collection, key: bytes, raw: bytes) -> None:
        """Insert a document that is most likely new, without reading first.
        If the key did exist, ``flush`` finds out (one failed INSERT per
        batch) and corrects the content hash."""
        ck = (c.cid, key)
        if ck in self._writes or ck in self._cache:
            self.put(c, key, raw)
            return
        h = self._hash.get(c.cid)
        if h is None:
            h = self._hash[c.cid] = [0, 0]
        h[0] += 1
        digest = doc_digest(raw)
        h[1] += digest
        self._writes[ck] = raw
        self._dg[ck] = (raw, digest)
        self._blind[ck] = None
        if self._missing_possible:
            self._missing[ck] = None

    def delete(self, c: Collection, key: bytes) -> bool:
        """Delete the document of ``key``; False when there was none."""
        old = self.get(c, key)
        if self._missing_possible:
            self._missing[(c.cid, key)] = None
        if old is None:
            return False
        h = self._hash.get(c.cid)
        if h is None:
            h = self._hash[c.cid] = [0, 0]
        h[0] -= 1
        h[1] -= self.digest(c, key, old)
        self._writes[(c.cid, key)] = None
        return True

    def note_missing(self, c: Collection, key: bytes, raw_id: bytes) -> None:
        """Record that an update found no document for ``key``."""
        self._missing_possible = True
        self._missing[(c.cid, key)] = raw_id

    def flush(self) -> None:
        """Write pending document changes to SQLite (still uncommitted)."""
        if self._writes:
            if self._blind:
                self._flush_blind()
            self._flush_known()
        if self._missing:
            adds = [(cid, k, rid) for (cid, k), rid in self._missing.items() if rid is not None]
            rems = [ck for ck, rid in self._missing.items() if rid is None]
            if rems:
                self.conn.executemany("DELETE FROM missing WHERE cid=? AND k=?", rems)
            if adds:
                self.conn.executemany(
                    "INSERT OR REPLACE INTO missing (cid, k, id) VALUES (?, ?, ?)", adds)
            self._missing.clear()
        self._flush_hashes()

    def _flush_blind(self) -> None:
        """Write the documents of ``put_new`` keys with a plain INSERT; if one
        existed after all, learn which did and correct the hash."""
        blind, self._blind = sorted(self._blind), {}
        writes, known, seq = self._writes, self._dg, self.seq
        rows = []
        for ck in blind:
            doc = writes[ck]
            if doc is None:  # inserted, then deleted: learn what was there
                break
            rows.append((ck[0], ck[1], doc, seq, known[ck][1].to_bytes(32, "big")))
        else:
            self.conn.execute("SAVEPOINT blind")
            try:
                self.conn.executemany(_INSERT, rows)
            except sqlite3.IntegrityError:
                self.conn.execute("ROLLBACK TO blind")
                self.conn.execute("RELEASE blind")
            else:
                self.conn.execute("RELEASE blind")
                cache = self._cache
                for ck in blind:
                    cache[ck] = writes.pop(ck)
                return
        self._learn_existing(blind)

    def _learn_existing(self, keys: list[tuple[int, bytes]]) -> None:
        """Read what the database holds for ``keys`` (blind inserts) and take
        the replaced documents out of the content hash."""
        by_cid: dict[int, list[bytes]] = {}
        for cid, k in keys:
            by_cid.setdefault(cid, []).append(k)
        for cid, ks in by_cid.items():
            for k in ks:
                self._cache[(cid, k)] = None
            for i in range(0, len(ks), _CHUNK):
                chunk = ks[i:i + _CHUNK]
                for k, doc, dg in self.conn.execute(self._select(len(chunk)), (cid, *chunk)):
                    self._cache[(cid, k)] = doc
                    h = self._hash.setdefault(cid, [0, 0])
                    h[0] -= 1
                    h[1] -= doc_digest(doc) if dg is None else int.from_bytes(dg, "big")

    def _flush_known(self) -> None:
        """Write documents whose previous state is known (in the cache)."""
        inserts, updates, dels, unknown = [], [], [], []
        seq, cache, known = self.seq, self._cache, self._dg
        for ck, doc in sorted(self._writes.items()):
            before = cache.get(ck, _UNKNOWN)
            if doc is None:
                if before is not None:
                    dels.append(ck)
                continue
            dg = known[ck][1].to_bytes(32, "big")
            if before is None:
                inserts.append((ck[0], ck[1], doc, seq, dg))
            elif before is _UNKNOWN:
                unknown.append((ck[0], ck[1], doc, seq, dg))
            else:
                updates.append((doc, seq, dg, ck[0], ck[1]))
        if inserts:
            self.conn.executemany(_INSERT, inserts)
        if unknown:
            self.conn.executemany(_UPSERT, unknown)
        if updates:
            self.conn.executemany(_UPDATE, updates)
        if dels:
            self.conn.executemany(_DELETE, dels)
            self.conn.executemany(
                "INSERT OR REPLACE INTO tombstones (cid, k, seq) VALUES (?, ?, ?)",
                [(cid, k, seq) for cid, k in dels])
        cache.update(self._writes)
        self._writes.clear()

    def forget(self) -> None:
        """Flush, then drop the read cache (bounds memory of long transactions)."""
        self.flush()
        self._cache.clear()
        self._dg.clear()

    def _flush_hashes(self) -> None:
        for cid, (dcount, dsum) in self._hash.items():
            c = self.catalog.by_cid.get(cid)
            if c is None:
                continue
            h = c.content_hash()
            h.add_digest(dsum % _MOD, dcount)
            self.catalog.set_hash(c, h)
        self._hash.clear()

    def discard_collection(self, c: Collection) -> None:
        """Forget cached state of ``c`` (before dropping or emptying it)."""
        self.flush()
        self._cache = {ck: d for ck, d in self._cache.items() if ck[0] != c.cid}
        self._dg = {ck: d for ck, d in self._dg.items() if ck[0] != c.cid}

    def truncate(self, c: Collection) -> None:
        """Remove every document of ``c`` (emptycapped, convertToCapped)."""
        self.discard_collection(c)
        for table in ("docs", "tombstones", "missing"):
            self.conn.execute(f"DELETE FROM {table} WHERE cid=?", (c.cid,))
        self.catalog.set_hash(c, ContentHash())
        self.catalog.set_generation(c, self.seq)

    # -- transactions kept for later (partialTxn chains, prepared) --

    def txn_save(self, txn: bytes, ts: int, raw_entry: bytes) -> None:
        self.conn.execute("INSERT OR REPLACE INTO txn_entries (txn, ts, entry) VALUES (?, ?, ?)",
                          (txn, ts, raw_entry))

    def txn_entries(self, txn: bytes) -> list[bytes]:
        rows = self.conn.execute("SELECT entry FROM txn_entries WHERE txn=? ORDER BY ts", (txn,))
        return [bytes(r[0]) for r in rows]

    def txn_clear(self, txn: bytes) -> None:
        self.conn.execute("DELETE FROM txn_entries WHERE txn=?", (txn,))

    # -- position and end --

    def set_optime(self, ts: int, t: int) -> None:
        self._optime = (ts, t)

    def commit(self) -> None:
        self.flush()
        self.conn.execute("UPDATE meta SET value=? WHERE key='seq'", (self.seq,))
        if self._optime is not None:
            self.conn.execute("UPDATE meta SET value=? WHERE key='ts'", (self._optime[0],))
            self.conn.execute("UPDATE meta SET value=? WHERE key='t'", (self._optime[1],))
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")
        self.catalog.reload()
