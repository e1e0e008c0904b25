"""Which namespaces a backup copies: include/exclude filters and the listing.

Filter entries are ``db`` (every collection of the database) or
``db.coll`` (one collection; the collection part may contain dots). An
empty include list means every database. Exclude always wins over include.

Never copied, whatever the filter says (``reference/oplog.md``):

- everything in ``local`` (the oplog itself, replication state);
- ``config`` internals: ``config.system.*`` (sessions, preimages,
  index builds, ...), ``config.transactions``, ``config.image_collection``,
  ``config.cache.*``. Other ``config`` collections (a config server's
  ``chunks``, ``collections``, ``shards``, ...) are data and are copied;
- ``admin.system.version`` (feature compatibility version, auth schema) and
  ``admin.system.keys`` (the cluster's signing keys): server state that a
  restore must never overwrite;
- ``<db>.system.profile`` (per node, never replicated) and the raw
  ``<db>.system.views`` collection (views are listed as ``view`` entries).

Users and roles: ``admin.system.users`` and ``admin.system.roles`` ARE
copied when ``admin`` is included (the default includes every database):
an operator expects a backup to hold them. Restores leave them out unless
asked (issue 6). Naming an internal namespace in a filter is an error.

Time series: the buckets collection ``db.system.buckets.X`` follows the
time-series view ``db.X`` (including ``db.X`` includes its buckets).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import bson
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from backupflows.errors import ConfigError, SourceError
from backupflows.source.client import RAW, describe, source_call, source_error

_EMPTY_DOC = b"\x05\x00\x00\x00\x00"
_BAD_DB_CHARS = re.compile(r'[/\\. "$*<>:|?\x00]')
_NAMESPACE_NOT_FOUND = 26
_INTERNAL_CONFIG = ("config.transactions", "config.image_collection")
_INTERNAL_ADMIN = ("admin.system.version", "admin.system.keys")
BUCKETS_PREFIX = "system.buckets."


class NamespaceFilterError(ConfigError, SourceError):
    """A filter entry is malformed, names an internal namespace, or the
    filter matches nothing on the source (a permanent error)."""


def is_internal(ns: str) -> bool:
    """True for namespaces a backup never copies (see the module docstring)."""
    db, _, coll = ns.partition(".")
    if db == "local":
        return True
    if db == "config" and (coll.startswith(("system.", "cache."))
                           or ns in _INTERNAL_CONFIG):
        return True
    return ns in _INTERNAL_ADMIN or coll in ("system.profile", "system.views")


def parse_entry(entry: str) -> tuple[str, str | None]:
    """``"db"`` -> ``("db", None)``, ``"db.a.b"`` -> ``("db", "a.b")``, or
    ``NamespaceFilterError`` saying what is wrong."""
    if not isinstance(entry, str) or not entry.strip():
        raise NamespaceFilterError(f"bad namespace filter entry {entry!r}: expected db or "
                                   "db.collection")
    text = entry.strip()
    db, dot, coll = text.partition(".")
    if not db or _BAD_DB_CHARS.search(db) or len(db.encode()) > 63:
        raise NamespaceFilterError(
            f"bad namespace filter entry {entry!r}: {db!r} is not a database name (1-63 bytes, "
            "none of / \\ . space \" $ * < > : | ?)")
    if dot and (not coll or "$" in coll or "\x00" in coll):
        raise NamespaceFilterError(f"bad namespace filter entry {entry!r}: {coll!r} is not a "
                                   "collection name (not empty, no $)")
    if db == "local" or (dot and is_internal(text)):
        raise NamespaceFilterError(f"namespace filter entry {entry!r} names an internal "
                                   "namespace, which a backup never copies")
    return db, (coll if dot else None)


@dataclass(frozen=True)
class NamespaceFilter:
    """Include/exclude lists of ``db`` or ``db.coll`` entries (validated)."""

    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    _inc: tuple[tuple[str, str | None], ...] = field(init=False, repr=False, compare=False)
    _exc: tuple[tuple[str, str | None], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise NamespaceFilterError(f"{name} must be a list of db or db.collection "
                                           f"entries, not the string {value!r}")
            parsed = tuple(parse_entry(e) for e in value or ())
            object.__setattr__(self, name, tuple(e.strip() for e in value or ()))
            object.__setattr__(self, "_" + name[:3], parsed)

    @property
    def is_everything(self) -> bool:
        return not self._inc and not self._exc

    def matches_db(self, db: str) -> bool:
        """Whether some collection of ``db`` may be copied."""
        if db == "local":
            return False
        if any(d == db and c is None for d, c in self._exc):
            return False
        return not self._inc or any(d == db for d, _ in self._inc)

    def matches_ns(self, ns: str) -> bool:
        """Whether ``db.coll`` is copied. For oplog commands (``db.$cmd``)
        pass the namespace the command acts on. ``db.system.views`` matches
        when its database does; ``db.system.buckets.X`` follows ``db.X``."""
        db, _, coll = ns.partition(".")
        if coll == "system.views":
            return self.matches_db(db)
        if is_internal(ns):
            return False
        if coll.startswith(BUCKETS_PREFIX):
            coll = coll[len(BUCKETS_PREFIX):]
        if any(d == db and c in (None, coll) for d, c in self._exc):
            return False
        return not self._inc or any(d == db and c in (None, coll) for d, c in self._inc)

    def describe(self) -> str:
        inc = ", ".join(self.include) or "everything"
        return f"include {inc}" + (f", exclude {', '.join(self.exclude)}" if self.exclude else "")


@dataclass(frozen=True)
class NamespaceInfo:
    """One namespace as listCollections/listIndexes/collStats describe it;
    ``options``, ``indexes`` and ``id_index`` are raw BSON documents."""

    db: str
    coll: str
    uuid: bytes | None
    type: str
    options: bytes
    indexes: list[bytes]
    size: int
    count: int
    id_index: bytes | None = None

    @property
    def ns(self) -> str:
        return f"{self.db}.{self.coll}"


def list_namespaces(client: MongoClient, filt: NamespaceFilter) -> list[NamespaceInfo]:
    """Every namespace of the source the filter copies, sorted by db then
    name. A filter that matches nothing is a ``NamespaceFilterError`` (an
    empty source with no filter is not: its data will come by the oplog)."""
    where = describe(client)
    with source_call(f"listing databases of {where}"):
        dbs = client.list_database_names()
    out: list[NamespaceInfo] = []
    for db in sorted(dbs):
        if filt.matches_db(db):
            out += _list_db(client, db, filt)
    if not out and not filt.is_everything:
        raise NamespaceFilterError(f"namespace filter ({filt.describe()}) matches nothing on "
                                   f"{where}; databases there: {', '.join(sorted(dbs)) or 'none'}")
    return out


def _list_db(client: MongoClient, db: str, filt: NamespaceFilter) -> list[NamespaceInfo]:
    database = client.get_database(db, codec_options=RAW)
    with source_call(f"listing collections of {db} on {describe(client)}"):
        entries = _raw_listing(database, "listCollections", 1)
    out = []
    for entry in sorted(entries, key=lambda e: e["name"]):
        ns = f"{db}.{entry['name']}"
        if filt.matches_ns(ns) and not is_internal(ns):
            info = _describe(database, entry)
            if info is not None:
                out.append(info)
    return out


def _describe(database, entry: RawBSONDocument) -> NamespaceInfo | None:
    name, type_ = entry["name"], entry.get("type", "collection")
    options = entry.get("options")
    info = entry.get("info") or {}
    uuid = info.get("uuid") if hasattr(info, "get") else None
    id_index = entry.get("idIndex")
    indexes: list[bytes] = []
    size = count = 0
    if type_ == "collection":
        try:
            indexes = _indexes(database, name)
            size, count = _stats(database, name)
        except OperationFailure as exc:
            if exc.code == _NAMESPACE_NOT_FOUND:
                return None   # dropped since listed: the oplog carries the drop
            raise source_error(exc, f"describing {database.name}.{name}") from None
        except PyMongoError as exc:
            raise source_error(exc, f"describing {database.name}.{name}") from None
    return NamespaceInfo(
        db=database.name, coll=name, uuid=bytes(uuid) if uuid is not None else None,
        type=type_, options=options.raw if options is not None else _EMPTY_DOC,
        indexes=indexes, size=size, count=count,
        id_index=id_index.raw if id_index is not None else None)


def _raw_listing(database, command: str, value: object) -> list[RawBSONDocument]:
    """A listing command's entries as raw documents. pymongo's helpers decode
    them, so the command is run directly with one large batch; a listing that
    does not fit one batch (tens of thousands of collections) falls back to
    the helper and re-encodes the entries."""
    reply = database.command(command, value, cursor={"batchSize": 100_000}, codec_options=RAW)
    cursor = reply["cursor"]
    if not cursor["id"]:
        return list(cursor["firstBatch"])
    database.command("killCursors", cursor["ns"].partition(".")[2], cursors=[cursor["id"]])
    helper = (database.list_collections() if command == "listCollections"
              else database[str(value)].list_indexes())
    return [RawBSONDocument(bson.encode(entry)) for entry in helper]


def _indexes(database, name: str) -> list[bytes]:
    """Raw index specs, in the server's order."""
    return [spec.raw for spec in _raw_listing(database, "listIndexes", name)]


def _stats(database, name: str) -> tuple[int, int]:
    """Data size and count for range planning (``collStats``, else ``$collStats``)."""
    try:
        stats = database.command("collStats", name)
        return int(stats.get("size", 0)), int(stats.get("count", 0))
    except OperationFailure as exc:
        if exc.code == _NAMESPACE_NOT_FOUND:
            raise
    rows = list(database[name].aggregate([{"$collStats": {"storageStats": {}}}]))
    storage = rows[0].get("storageStats", {}) if rows else {}
    return int(storage.get("size", 0)), int(storage.get("count", 0))


def unmatched_includes(filt: NamespaceFilter, found: Iterable[NamespaceInfo]) -> list[str]:
    """Include entries that matched no listed namespace (worth a warning)."""
    found = list(found)
    missing = []
    for text, (db, coll) in zip(filt.include, filt._inc, strict=True):
        if not any(n.db == db and (coll is None or n.coll == coll) for n in found):
            missing.append(text)
    return missing
