"""Databases, collections and their documents, kept as raw BSON.

A ``Collection`` holds each document as the exact bytes it was written with
(field order preserved) under a *record id*: record ids grow with every
insert, so iterating them in order is the collection's natural order, and an
update in place keeps its record id and so its position. A second sorted map
from ``bsonorder.id_key`` (the server sort order of ``_id``) to record id is
the ``_id`` index; scans in ``_id`` order and ``_id`` range lookups never
decode a document. Unique secondary indexes are enforced with one dictionary
per index (key bytes -> record id); other indexes are catalog metadata only.

Nothing here locks: the ``Store`` (store.py) serialises every command with
one lock, like a global write lock.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator, Mapping
from typing import Any

import bson
from sortedcontainers import SortedDict

from backupflows.bsonorder import id_key
from backupflows.sandbox import indexes as idx
from backupflows.sandbox.errors import DUPLICATE_KEY, CommandError
from backupflows.sandbox.wire import CODEC


def decode(raw: bytes) -> dict:
    return bson.decode(raw, CODEC)


def encode(doc: Mapping) -> bytes:
    return bson.encode(doc, codec_options=CODEC)


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[ " + ", ".join(_fmt(v) for v in value) + " ]"
    if isinstance(value, bson.ObjectId):
        return f"ObjectId('{value}')"
    return repr(value)


def duplicate_key_error(ns: str, index: Mapping, key_value: Mapping) -> CommandError:
    """The server's E11000 error, with ``keyPattern``/``keyValue`` attached."""
    dup = "{ " + ", ".join(f"{k}: {_fmt(v)}" for k, v in key_value.items()) + " }"
    err = CommandError(DUPLICATE_KEY,
                       f"E11000 duplicate key error collection: {ns} index: "
                       f"{index['name']} dup key: {dup}")
    err.details = {"keyPattern": dict(index["key"]), "keyValue": dict(key_value)}
    return err


class Collection:
    """One collection: raw documents by record id, plus its indexes."""

    has_id_index = True

    def __init__(self, db: str, name: str, options: dict | None = None,
                 uuid: uuidlib.UUID | None = None) -> None:
        self.db, self.name = db, name
        self.uuid = uuid or uuidlib.uuid4()
        self.options: dict = dict(options or {})
        self.records: SortedDict = SortedDict()
        self.by_id: SortedDict = SortedDict()
        self.indexes: dict[str, dict] = {}
        self.unique: dict[str, dict[bytes, int]] = {}
        self.data_size = 0
        self.next_rid = 1
        if self.has_id_index:
            self.indexes["_id_"] = dict(idx.ID_INDEX)

    @property
    def ns(self) -> str:
        return f"{self.db}.{self.name}"

    @property
    def capped(self) -> bool:
        return bool(self.options.get("capped"))

    def __len__(self) -> int:
        return len(self.records)

    # -- reads -------------------------------------------------------------
    def rid_of(self, key: bytes) -> int | None:
        return self.by_id.get(key)

    def scan_natural(self, after: int | None = None, reverse: bool = False,
                     lo: int | None = None, hi: int | None = None,
                     inclusive: tuple[bool, bool] = (True, True)) -> Iterator[int]:
        """Record ids in natural order within [lo, hi], resuming strictly
        after ``after`` (a position already returned)."""
        lo_incl, hi_incl = inclusive
        if after is not None and not reverse and (lo is None or after >= lo):
            lo, lo_incl = after, False
        if after is not None and reverse and (hi is None or after <= hi):
            hi, hi_incl = after, False
        return self.records.irange(lo, hi, (lo_incl, hi_incl), reverse=reverse)

    def scan_ids(self, lo: bytes | None, hi: bytes | None, inclusive: tuple[bool, bool],
                 reverse: bool = False) -> Iterator[bytes]:
        return self.by_id.irange(lo, hi, inclusive, reverse=reverse)

    # -- writes ------------------------------------------------------------
    def insert(self, raw: bytes, doc: Mapping | None = None) -> int:
        """Store a raw document; DuplicateKey if its ``_id`` or a unique key exists."""
        key = id_key(raw)
        if key in self.by_id:
            doc = doc if doc is not None else decode(raw)
            raise duplicate_key_error(self.ns, self.indexes["_id_"], {"_id": doc.get("_id")})
        rid = self.next_rid
        if self.unique:
            self._add_unique(rid, doc if doc is not None else decode(raw))
        self.next_rid += 1
        self.records[rid] = raw
        self.by_id[key] = rid
        self.data_size += len(raw)
        return rid

    def replace(self, rid: int, new_raw: bytes, old_doc: Mapping | None = None,
                new_doc: Mapping | None = None) -> None:
        """Replace the document at ``rid`` in place (same ``_id``)."""
        old_raw = self.records[rid]
        if self.unique:
            old_doc = old_doc if old_doc is not None else decode(old_raw)
            self._remove_unique(rid, old_doc)
            try:
                self._add_unique(rid, new_doc if new_doc is not None else decode(new_raw))
            except CommandError:
                self._add_unique(rid, old_doc)
                raise
        self.records[rid] = new_raw
        self.data_size += len(new_raw) - len(old_raw)

    def delete(self, rid: int) -> bytes:
        raw = self.records.pop(rid)
        self.data_size -= len(raw)
        if self.has_id_index:
            del self.by_id[id_key(raw)]
        if self.unique:
            self._remove_unique(rid, decode(raw))
        return raw

    def restore(self, rid: int, raw: bytes) -> None:
        """Put a deleted document back at its old position (transaction undo)."""
        if self.unique:
            self._add_unique(rid, decode(raw))
        self.records[rid] = raw
        if self.has_id_index:
            self.by_id[id_key(raw)] = rid
        self.data_size += len(raw)

    def enforce_cap(self) -> int:
        """Drop the oldest documents of a capped collection over its limits."""
        size = self.options.get("size") or 0
        max_docs = self.options.get("max") or 0
        removed = 0
        while len(self.records) > 1 and (
                (size and self.data_size > size) or (max_docs and len(self.records) > max_docs)):
            self.delete(self.records.keys()[0])
            removed += 1
        return removed

    # -- unique indexes ----------------------------------------------------
    def _unique_keys(self, spec: dict, doc: Mapping) -> list[bytes]:
        pfe = spec.get("partialFilterExpression")
        if pfe:
            from backupflows.sandbox.query import matches
            if not matches(doc, pfe):
                return []
        return idx.index_keys(doc, spec["key"], bool(spec.get("sparse")))

    def _add_unique(self, rid: int, doc: Mapping) -> None:
        added: list[tuple[str, bytes]] = []
        for name, table in self.unique.items():
            spec = self.indexes[name]
            for key in self._unique_keys(spec, doc):
                owner = table.get(key)
                if owner is not None and owner != rid:
                    for n, k in added:
                        del self.unique[n][k]
                    raise duplicate_key_error(self.ns, spec, idx.key_value_doc(doc, spec["key"]))
                if owner is None:
                    table[key] = rid
                    added.append((name, key))

    def _remove_unique(self, rid: int, doc: Mapping) -> None:
        for name, table in self.unique.items():
            for key in self._unique_keys(self.indexes[name], doc):
                if table.get(key) == rid:
                    del table[key]

    def add_index(self, spec: dict) -> None:
        """Register an index (DuplicateKey if a unique one is violated)."""
        if spec.get("unique") and spec["name"] != "_id_":
            table: dict[bytes, int] = {}
            self.indexes[spec["name"]] = spec
            self.unique[spec["name"]] = table
            try:
                for rid, raw in self.records.items():
                    doc = decode(raw)
                    for key in self._unique_keys(spec, doc):
                        if table.setdefault(key, rid) != rid:
                            raise duplicate_key_error(self.ns, spec,
                                                      idx.key_value_doc(doc, spec["key"]))
            except CommandError:
                del self.indexes[spec["name"]], self.unique[spec["name"]]
                raise
        self.indexes[spec["name"]] = spec

    def drop_index(self, name: str) -> dict:
        self.unique.pop(name, None)
        return self.indexes.pop(name)

    def find_index(self, name_or_key: Any) -> dict | None:
        if isinstance(name_or_key, str):
            return self.indexes.get(name_or_key)
        matches = [s for s in self.indexes.values() if s["key"] == dict(name_or_key)]
        return matches[0] if matches else None


class Catalog:
    """Every database and collection of the sandbox, by name."""

    def __init__(self) -> None:
        self.dbs: dict[str, dict[str, Collection]] = {}

    def get(self, db: str, name: str) -> Collection | None:
        return self.dbs.get(db, {}).get(name)

    def by_ns(self, ns: str) -> Collection | None:
        db, _, name = ns.partition(".")
        return self.get(db, name)

    def add(self, coll: Collection) -> Collection:
        self.dbs.setdefault(coll.db, {})[coll.name] = coll
        return coll

    def remove(self, db: str, name: str) -> Collection:
        colls = self.dbs[db]
        coll = colls.pop(name)
        if not colls:
            del self.dbs[db]
        return coll

    def collections(self, db: str) -> list[Collection]:
        return [self.dbs[db][n] for n in sorted(self.dbs.get(db, {}))]

    def database_names(self) -> list[str]:
        return sorted(self.dbs)

    def view(self, db: str, name: str) -> dict | None:
        """The definition of view ``db.name`` (from ``db.system.views``)."""
        views = self.get(db, "system.views")
        if views is None:
            return None
        rid = views.rid_of(id_key(encode({"_id": f"{db}.{name}"})))
        return None if rid is None else decode(views.records[rid])
