"""Reads: find, getMore, killCursors, count, distinct, aggregate.

Batches are spliced from the stored raw documents (``wire.raw_array_parts``), so a
plain find never decodes what it returns. Queries on views run the view's
pipeline through the aggregation engine.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping
from typing import Any

from bson.int64 import Int64

from backupflows.sandbox import plan, wire
from backupflows.sandbox.commands import Ctx, RawReply, command
from backupflows.sandbox.cursors import (
    DEFAULT_FIRST_BATCH,
    QUERY_PLAN_KILLED,
    Cursor,
    ListCursor,
    ScanCursor,
    id_only,
)
from backupflows.sandbox.errors import BAD_VALUE, TYPE_MISMATCH, CommandError
from backupflows.sandbox.storage import Collection, decode, encode

DEFAULT_AWAIT_MS = 1000
MAX_VIEW_DEPTH = 20


def _int_arg(ctx: Ctx, name: str, default: int = 0, minimum: int = 0) -> int:
    value = ctx.arg(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandError(TYPE_MISMATCH, f"BSON field '{ctx.name}.{name}' is the wrong type "
                           f"'{type(value).__name__}', expected types '[long, int, decimal, "
                           f"double]'", "TypeMismatch")
    if value < minimum:
        raise CommandError(51024 if name == "batchSize" else BAD_VALUE,
                           f"BSON field '{name}' value must be >= {minimum}, actual value "
                           f"'{value}'")
    return int(value)


def coll_name(ctx: Ctx) -> str:
    name = ctx.cmd[ctx.name]
    if not isinstance(name, str) or not name:
        raise CommandError(73, f"collection name has invalid type {type(name).__name__}",
                           "InvalidNamespace")
    return name


def cursor_reply(batch: list[bytes], cursor_id: int, ns: str, first: bool) -> RawReply:
    key = "firstBatch" if first else "nextBatch"
    cursor_doc = wire.doc_parts([
        *wire.element_parts(key, 0x04, wire.raw_array_parts(batch)),
        wire.element("id", 0x12, wire.int64(cursor_id)),
        wire.element("ns", 0x02, wire.string(ns))])
    return RawReply(b"".join(wire.element_parts("cursor", 0x03, cursor_doc)))


def open_cursor(ctx: Ctx, cursor: Cursor, batch_size: int, single_batch: bool = False
                ) -> RawReply:
    """Serve the first batch; register the cursor if more may come."""
    batch, done = cursor.next_batch(batch_size)
    cursor_id = 0
    if not done and not single_batch:
        cursor.lsid = (ctx.arg("lsid") or {}).get("id")
        cursor_id = ctx.store.cursors.register(cursor)
    return cursor_reply(batch, cursor_id, cursor.ns, first=True)


def resolve_view(ctx: Ctx, db: str, name: str) -> tuple[str, list] | None:
    """(underlying collection, full pipeline) if ``db.name`` is a view."""
    pipeline: list = []
    seen = 0
    view = ctx.store.catalog.view(db, name)
    if view is None:
        return None
    while view is not None and seen < MAX_VIEW_DEPTH:
        pipeline = list(view.get("pipeline") or []) + pipeline
        name = view["viewOn"]
        view = ctx.store.catalog.view(db, name)
        seen += 1
    return name, pipeline


def aggregate_docs(coll: Collection | None, pipeline: list) -> list[dict]:
    from backupflows.sandbox.query import aggregate
    if coll is None:
        return aggregate([], pipeline)
    if pipeline and isinstance(pipeline[0], Mapping) and list(pipeline[0]) == ["$match"]:
        return aggregate(plan.iter_docs(coll, pipeline[0]["$match"]), pipeline[1:])
    if pipeline and isinstance(pipeline[0], Mapping) and list(pipeline[0]) == ["$sample"]:
        # As the server does for a leading $sample: pick random records
        # without reading (or decoding) the whole collection.
        from backupflows.sandbox.query_aggregate import sample_size
        n = sample_size(pipeline[0]["$sample"])
        rids = random.sample(list(coll.records.keys()), min(n, len(coll.records)))
        return aggregate((decode(coll.records[r]) for r in rids), pipeline[1:])
    return aggregate(plan.iter_docs(coll, None), pipeline)


def _list_cursor(ns: str, docs: Iterable[Mapping]) -> ListCursor:
    return ListCursor(ns=ns, docs=[encode(d) for d in docs])


# -- find --------------------------------------------------------------------

def _find_on_view(ctx: Ctx, db: str, name: str, target: str, pipeline: list) -> RawReply:
    stages = list(pipeline)
    for arg, stage in (("filter", "$match"), ("sort", "$sort"), ("skip", "$skip"),
                       ("limit", "$limit"), ("projection", "$project")):
        value = ctx.arg(arg)
        if value:
            stages.append({stage: value})
    docs = aggregate_docs(ctx.store.catalog.get(db, target), stages)
    cursor = _list_cursor(f"{db}.{name}", docs)
    return open_cursor(ctx, cursor, _int_arg(ctx, "batchSize", DEFAULT_FIRST_BATCH),
                       bool(ctx.arg("singleBatch")))


def _sorted_cursor(coll: Collection, filter_: Mapping, sort: Mapping, skip: int, limit: int,
                   projection: Mapping | None) -> ListCursor:
    """An in-memory sort; unprojected results are still the stored raw bytes."""
    from backupflows.sandbox.query import project, sort_docs
    raws: dict[int, bytes] = {}
    docs = []
    for _rid, raw in plan.iter_matching(coll, filter_):
        doc = decode(raw)
        raws[id(doc)] = raw
        docs.append(doc)
    ordered = sort_docs(docs, sort)
    ordered = ordered[skip:skip + limit] if limit else ordered[skip:]
    if projection:
        return _list_cursor(coll.ns, [project(d, projection) for d in ordered])
    return ListCursor(ns=coll.ns, docs=[raws.get(id(d)) or encode(d) for d in ordered])


def _check_find_args(ctx: Ctx, coll: Collection | None) -> None:
    for arg in ("filter", "sort", "projection"):
        value = ctx.arg(arg)
        if value is not None and not isinstance(value, Mapping):
            raise CommandError(TYPE_MISMATCH, f"BSON field 'FindCommandRequest.{arg}' is the "
                               f"wrong type '{type(value).__name__}', expected type 'object'",
                               "TypeMismatch")
    if ctx.arg("tailable") and (coll is None or not coll.capped):
        raise CommandError(BAD_VALUE, "error processing query: tailable cursor requested on"
                           " non capped collection")
    if ctx.arg("awaitData") and not ctx.arg("tailable"):
        raise CommandError(9, "Cannot set 'awaitData' without also setting 'tailable'",
                           "FailedToParse")


@command("find")
def find(ctx: Ctx) -> RawReply:
    name = coll_name(ctx)
    ns = f"{ctx.db}.{name}"
    ctx.store.opcounters["query"] += 1
    view = resolve_view(ctx, ctx.db, name)
    if view is not None:
        return _find_on_view(ctx, ctx.db, name, *view)
    coll = ctx.store.catalog.get(ctx.db, name)
    _check_find_args(ctx, coll)
    skip, limit = _int_arg(ctx, "skip"), _int_arg(ctx, "limit")
    batch_size = _int_arg(ctx, "batchSize", DEFAULT_FIRST_BATCH)
    if coll is None:
        return cursor_reply([], 0, ns, first=True)
    filter_, projection = ctx.arg("filter") or {}, ctx.arg("projection") or None
    bounds, kind, residual = plan.split(filter_, coll)
    if ctx.arg("min") is not None or ctx.arg("max") is not None:
        bounds, kind, residual = plan.min_max_bounds(
            coll, ctx.arg("hint"), ctx.arg("min"), ctx.arg("max"), bounds, kind, residual)
    order = plan.scan_order(coll, ctx.arg("sort"), ctx.arg("hint"), kind)
    if order is None:
        cursor: Cursor = _sorted_cursor(coll, filter_, ctx.arg("sort"), skip, limit,
                                        projection)
    else:
        scan = plan.make_scan(coll, order, bounds, kind, residual)
        scan.skip, scan.limit = skip, limit
        scan.tailable, scan.await_data = bool(ctx.arg("tailable")), bool(ctx.arg("awaitData"))
        scan.no_timeout = bool(ctx.arg("noCursorTimeout"))
        if projection:
            from backupflows.sandbox.query import project
            scan.projector = lambda doc: project(doc, projection)
            if _is_id_only(projection):
                scan.raw_projector = id_only
        cursor = scan
    single = bool(ctx.arg("singleBatch"))
    if limit and (not batch_size or batch_size > limit):
        batch_size = limit
    return open_cursor(ctx, cursor, batch_size, single)


def _is_id_only(projection: Mapping) -> bool:
    """``{_id: 1}`` (or true): served from the raw document (a real server
    answers it from the ``_id`` index without reading documents)."""
    if list(projection) != ["_id"]:
        return False
    v = projection["_id"]
    return v is True or (isinstance(v, int | float) and v == 1)


# -- getMore / killCursors ----------------------------------------------------

def _await_batch(ctx: Ctx, cursor: Cursor, batch_size: int) -> tuple[list[bytes], bool]:
    """Next batch; an awaitData cursor that finds nothing waits for new writes."""
    wait_ms = _int_arg(ctx, "maxTimeMS", DEFAULT_AWAIT_MS) if cursor.await_data else 0
    deadline = time.monotonic() + wait_ms / 1000.0
    while True:
        if isinstance(cursor, ScanCursor):
            if cursor.coll is None:
                raise CommandError(QUERY_PLAN_KILLED, "collection dropped during the query",
                                   "QueryPlanKilled")
            cursor.check_position()
        batch, done = cursor.next_batch(batch_size)
        remaining = deadline - time.monotonic()
        if batch or done or remaining <= 0 or ctx.server.stopping:
            return batch, done
        ctx.store.cond.wait(remaining)


@command("getMore")
def get_more(ctx: Ctx) -> RawReply:
    cursor_id = ctx.cmd["getMore"]
    collection = ctx.arg("collection")
    if not isinstance(cursor_id, int) or not isinstance(collection, str):
        raise CommandError(TYPE_MISMATCH, "getMore takes a cursor id (long) and a "
                           "'collection' name", "TypeMismatch")
    ctx.store.opcounters["getmore"] += 1
    ns = f"{ctx.db}.{collection}"
    cursor = ctx.store.cursors.get(int(cursor_id), ns)
    batch_size = _int_arg(ctx, "batchSize", 0)
    try:
        batch, done = _await_batch(ctx, cursor, batch_size)
    except CommandError:
        ctx.store.cursors.drop(cursor.cursor_id)
        raise
    if done:
        ctx.store.cursors.drop(cursor.cursor_id)
    cursor.last_used = time.monotonic()
    return cursor_reply(batch, 0 if done else cursor.cursor_id, ns, first=False)


@command("killCursors")
def kill_cursors(ctx: Ctx) -> dict:
    ids = ctx.arg("cursors")
    if not isinstance(ids, list):
        raise CommandError(TYPE_MISMATCH, "killCursors needs a 'cursors' array", "TypeMismatch")
    killed, missing = ctx.store.cursors.kill([int(i) for i in ids])
    return {"cursorsKilled": [Int64(i) for i in killed],
            "cursorsNotFound": [Int64(i) for i in missing],
            "cursorsAlive": [], "cursorsUnknown": []}


# -- count / distinct / aggregate -----------------------------------------------

def _count(coll: Collection, filter_: Mapping | None) -> int:
    if not filter_:
        return len(coll)
    return sum(1 for _ in plan.iter_matching(coll, filter_))


@command("count")
def count(ctx: Ctx) -> dict:
    name = coll_name(ctx)
    view = resolve_view(ctx, ctx.db, name)
    query = ctx.arg("query") or {}
    if view is not None:
        docs = aggregate_docs(ctx.store.catalog.get(ctx.db, view[0]),
                              view[1] + [{"$match": query}])
        n = len(docs)
    else:
        coll = ctx.store.catalog.get(ctx.db, name)
        n = 0 if coll is None else _count(coll, query)
    skip, limit = _int_arg(ctx, "skip"), abs(int(ctx.arg("limit", 0) or 0))
    n = max(0, n - skip)
    return {"n": min(n, limit) if limit else n}


@command("distinct")
def distinct(ctx: Ctx) -> dict:
    from backupflows.sandbox.query import distinct as engine_distinct
    name, key = coll_name(ctx), ctx.arg("key")
    if not isinstance(key, str):
        raise CommandError(TYPE_MISMATCH, "BSON field 'distinct.key' is missing or not a "
                           "string", "TypeMismatch")
    view = resolve_view(ctx, ctx.db, name)
    query = ctx.arg("query") or {}
    if view is not None:
        docs: Iterable[Mapping] = aggregate_docs(ctx.store.catalog.get(ctx.db, view[0]),
                                                 view[1] + [{"$match": query}])
    else:
        coll = ctx.store.catalog.get(ctx.db, name)
        docs = [] if coll is None else plan.iter_docs(coll, query)
    return {"values": engine_distinct(docs, key)}


@command("aggregate")
def aggregate(ctx: Ctx) -> RawReply:
    target, pipeline = ctx.cmd["aggregate"], ctx.arg("pipeline")
    if not isinstance(pipeline, list):
        raise CommandError(TYPE_MISMATCH, "'pipeline' option must be specified as an array",
                           "TypeMismatch")
    if ctx.arg("explain"):
        raise CommandError(115, "the sandbox does not explain aggregations",
                           "CommandNotSupported")
    options = ctx.arg("cursor")
    if not isinstance(options, Mapping):
        raise CommandError(9, "The 'cursor' option is required, except for aggregate with "
                           "the explain argument", "FailedToParse")
    coll: Collection | None = None
    if isinstance(target, str):
        view = resolve_view(ctx, ctx.db, target)
        if view is not None:
            target_name, pipeline = view[0], view[1] + pipeline
        else:
            target_name = target
        coll = ctx.store.catalog.get(ctx.db, target_name)
        ns = f"{ctx.db}.{target}"
    else:
        ns = f"{ctx.db}.$cmd.aggregate"
    docs = aggregate_docs(coll, pipeline)
    batch_size = int(options.get("batchSize", DEFAULT_FIRST_BATCH))
    return open_cursor(ctx, _list_cursor(ns, docs), batch_size)


def decode_batch(batch: list[bytes]) -> list[dict[str, Any]]:
    """Helper for tests and tools: decode a batch of raw documents."""
    return [decode(raw) for raw in batch]
