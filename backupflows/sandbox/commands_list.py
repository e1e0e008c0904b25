"""Catalog listings and statistics: listDatabases, listCollections,
listIndexes, dbStats, collStats, dbHash.

``dbHash`` follows ``src/mongo/db/commands/dbhash.cpp``: each replicated
collection's md5 is taken over its raw documents in ``_id`` order (natural
order for a collection without an ``_id`` index), the overall ``md5`` over the
per-collection hex digests in collection-name order.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from bson.int64 import Int64

from backupflows.sandbox.commands import Ctx, RawReply, command
from backupflows.sandbox.commands_find import _list_cursor, coll_name, open_cursor
from backupflows.sandbox.errors import NAMESPACE_NOT_FOUND, TYPE_MISMATCH, CommandError
from backupflows.sandbox.storage import Collection


def _matches(doc: Mapping, filter_: Mapping | None) -> bool:
    if not filter_:
        return True
    from backupflows.sandbox.query import matches
    return matches(doc, filter_)


def _db_size(ctx: Ctx, db: str) -> int:
    return sum(c.data_size for c in ctx.store.catalog.collections(db))


@command("listDatabases")
def list_databases(ctx: Ctx) -> dict:
    filter_ = ctx.arg("filter")
    dbs, total = [], 0
    for name in ctx.store.catalog.database_names():
        size = _db_size(ctx, name)
        entry = {"name": name, "sizeOnDisk": Int64(size), "empty": size == 0}
        if not _matches(entry, filter_):
            continue
        total += size
        dbs.append({"name": name} if ctx.arg("nameOnly") else entry)
    if ctx.arg("nameOnly"):
        return {"databases": dbs}
    return {"databases": dbs, "totalSize": Int64(total), "totalSizeMb": Int64(total >> 20)}


def collection_entry(coll: Collection) -> dict:
    entry: dict[str, Any] = {"name": coll.name, "type": "collection",
                             "options": dict(coll.options),
                             "info": {"readOnly": False, "uuid": coll.uuid}}
    if "_id_" in coll.indexes:
        entry["idIndex"] = dict(coll.indexes["_id_"])
    return entry


def _view_entries(ctx: Ctx) -> list[dict]:
    views = ctx.store.catalog.get(ctx.db, "system.views")
    if views is None:
        return []
    from backupflows.sandbox.storage import decode
    out = []
    for raw in views.records.values():
        view = decode(raw)
        options = {"viewOn": view.get("viewOn"), "pipeline": view.get("pipeline", [])}
        if view.get("collation"):
            options["collation"] = view["collation"]
        out.append({"name": str(view["_id"]).partition(".")[2], "type": "view",
                    "options": options, "info": {"readOnly": True}})
    return out


@command("listCollections")
def list_collections(ctx: Ctx) -> RawReply:
    filter_ = ctx.arg("filter")
    if filter_ is not None and not isinstance(filter_, Mapping):
        raise CommandError(TYPE_MISMATCH, "'filter' must be an object", "TypeMismatch")
    entries = [collection_entry(c) for c in ctx.store.catalog.collections(ctx.db)]
    entries += _view_entries(ctx)
    entries.sort(key=lambda e: e["name"])
    entries = [e for e in entries if _matches(e, filter_)]
    if ctx.arg("nameOnly"):
        entries = [{"name": e["name"], "type": e["type"]} for e in entries]
    cursor = _list_cursor(f"{ctx.db}.$cmd.listCollections", entries)
    batch = int((ctx.arg("cursor") or {}).get("batchSize", 0) or 0)
    return open_cursor(ctx, cursor, batch)


@command("listIndexes")
def list_indexes(ctx: Ctx) -> RawReply:
    name = coll_name(ctx)
    coll = ctx.store.catalog.get(ctx.db, name)
    if coll is None:
        raise CommandError(NAMESPACE_NOT_FOUND, f"ns does not exist: {ctx.db}.{name}")
    cursor = _list_cursor(coll.ns, [dict(s) for s in coll.indexes.values()])
    batch = int((ctx.arg("cursor") or {}).get("batchSize", 0) or 0)
    return open_cursor(ctx, cursor, batch)


@command("dbStats")
def db_stats(ctx: Ctx) -> dict:
    colls = ctx.store.catalog.collections(ctx.db)
    objects = sum(len(c) for c in colls)
    size = sum(c.data_size for c in colls)
    n_indexes = sum(len(c.indexes) for c in colls)
    return {"db": ctx.db, "collections": len(colls), "views": len(_view_entries(ctx)),
            "objects": objects, "avgObjSize": size / objects if objects else 0,
            "dataSize": float(size), "storageSize": float(size), "indexes": n_indexes,
            "indexSize": 0.0, "totalSize": float(size), "scaleFactor": 1,
            "fsUsedSize": 0.0, "fsTotalSize": 0.0}


@command("collStats")
def coll_stats(ctx: Ctx) -> dict:
    name = coll_name(ctx)
    coll = ctx.store.catalog.get(ctx.db, name)
    if coll is None:
        raise CommandError(NAMESPACE_NOT_FOUND, f"Collection [{ctx.db}.{name}] not found.")
    return {"ns": coll.ns, "size": coll.data_size, "count": len(coll),
            "avgObjSize": coll.data_size // len(coll) if len(coll) else 0,
            "storageSize": coll.data_size, "capped": coll.capped,
            "nindexes": len(coll.indexes), "totalIndexSize": 0,
            "indexSizes": {n: 0 for n in coll.indexes}}


def collection_md5(coll: Collection) -> str:
    """md5 of the raw documents in ``_id`` order (natural order without it)."""
    digest = hashlib.md5()
    if coll.has_id_index:
        for rid in coll.by_id.values():
            digest.update(coll.records[rid])
    else:
        for raw in coll.records.values():
            digest.update(raw)
    return digest.hexdigest()


@command("dbHash", "dbhash")
def db_hash(ctx: Ctx) -> dict:
    started = time.monotonic()
    wanted = ctx.arg("collections")
    if wanted is not None and not isinstance(wanted, list):
        raise CommandError(TYPE_MISMATCH, "'collections' must be an array", "TypeMismatch")
    hashes: dict[str, str] = {}
    uuids: dict[str, Any] = {}
    capped: list[str] = []
    for coll in ctx.store.catalog.collections(ctx.db):
        if ctx.db == "local" or coll.name.startswith("system.profile") or (
                wanted and coll.name not in wanted):
            continue
        hashes[coll.name] = collection_md5(coll)
        uuids[coll.name] = coll.uuid
        if coll.capped:
            capped.append(coll.name)
    overall = hashlib.md5()
    for name in sorted(hashes):
        overall.update(hashes[name].encode())
    return {"numCollections": len(hashes), "host": ctx.server.address,
            "collections": {n: hashes[n] for n in sorted(hashes)}, "capped": capped,
            "uuids": {n: uuids[n] for n in sorted(uuids)}, "md5": overall.hexdigest(),
            "timeMillis": int((time.monotonic() - started) * 1000)}
