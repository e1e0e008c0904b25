"""Writes: insert, update, delete, findAndModify.

Inserted documents are stored as the bytes the client sent, except that an
``_id`` is generated (an ObjectId, first field) when absent and moved to the
front when it is not first, as the server does. Updates go through the update
engine (``update.apply_update``), whose ``oplog_o`` is what the oplog entry
carries; an update that changes nothing writes no entry. Each statement of a
retryable write is executed once per (session, txnNumber, stmtId).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from functools import cache
from typing import Any

from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from backupflows.bsonorder import find_field, id_key, skip_value
from backupflows.sandbox import plan, wire
from backupflows.sandbox.commands import Ctx, command
from backupflows.sandbox.commands_find import coll_name
from backupflows.sandbox.errors import (
    FAILED_TO_PARSE,
    IMMUTABLE_FIELD,
    TYPE_MISMATCH,
    CommandError,
)
from backupflows.sandbox.oplog import ts_parts
from backupflows.sandbox.storage import Collection, decode, encode

INVALID_ID_FIELD = 53
INVALID_LENGTH = 16
BSON_TOO_LARGE = 17419
MAX_DOC_SIZE = 16 * 1024 * 1024
_BAD_ID_TYPES = {0x04: "array", 0x0B: "regex", 0x06: "undefined"}


def prepare_insert(raw: bytes) -> bytes:
    """The document as the server stores it: ``_id`` present and first."""
    found = find_field(raw, b"_id")
    if found is None:
        return wire.doc_from_elements(wire.element("_id", 0x07, ObjectId().binary), raw[4:-1])
    t, pos = found
    if t in _BAD_ID_TYPES:
        raise CommandError(INVALID_ID_FIELD, f"The '_id' value cannot be of type "
                           f"{_BAD_ID_TYPES[t]}", "InvalidIdField")
    start = pos - 5  # type byte + "_id\x00"
    if start == 4:
        return raw
    end = skip_value(t, raw, pos)
    return wire.doc_from_elements(raw[start:end], raw[4:start], raw[end:-1])


def _target(ctx: Ctx, create: bool) -> Collection | None:
    name = coll_name(ctx)
    if ctx.db == "local" and name == "oplog.rs":
        raise CommandError(20, "cannot write to 'local.oplog.rs'", "IllegalOperation")
    if ctx.store.catalog.view(ctx.db, name):
        raise CommandError(166, f"Namespace {ctx.db}.{name} is a view, not a collection",
                           "CommandNotSupportedOnView")
    if create:
        return ctx.store.ensure_collection(ctx.write, ctx.db, name)[0]
    return ctx.store.catalog.get(ctx.db, name)


def _write_error(index: int, err: CommandError) -> dict:
    doc: dict[str, Any] = {"index": index, "code": err.code}
    doc.update(getattr(err, "details", None) or {})
    doc["errmsg"] = err.message
    return doc


def _stmt_ids(ctx: Ctx, count: int) -> list[int]:
    ids = ctx.arg("stmtIds")
    if isinstance(ids, list) and len(ids) == count:
        return [int(i) for i in ids]
    first = int(ctx.arg("stmtId", 0) or 0)
    return list(range(first, first + count))


def _check_batch(count: int) -> None:
    if count < 1 or count > 100_000:
        raise CommandError(INVALID_LENGTH, f"Write batch sizes must be between 1 and 100000. "
                           f"Got {count} operations.", "InvalidLength")


@command("insert", write=True)
def insert(ctx: Ctx) -> dict:
    docs = ctx.documents("documents")
    _check_batch(len(docs))
    coll = _target(ctx, create=True)
    retry = ctx.write.retry
    ordered = ctx.arg("ordered", True) is not False
    n, errors = 0, []
    for i, (raw, stmt_id) in enumerate(zip(docs, _stmt_ids(ctx, len(docs)))):
        if retry is not None and stmt_id in retry.results:
            n += 1
            continue
        try:
            ctx.store.insert(ctx.write, coll, prepare_insert(raw), stmt_id)
        except CommandError as err:
            errors.append(_write_error(i, err))
            if ordered:
                break
            continue
        n += 1
        if retry is not None:
            retry.results[stmt_id] = True
    return {"n": n, "writeErrors": errors} if errors else {"n": n}


# -- updates -------------------------------------------------------------------

@cache
def _engine_options() -> frozenset[str]:
    from backupflows.sandbox.update import apply_update
    return frozenset(inspect.signature(apply_update).parameters)


def apply(ctx: Ctx, doc: dict, update: Any, array_filters: list | None,
          query: Mapping) -> Any:
    """Run the update engine; ``$currentDate: {$type: "timestamp"}`` gets the
    timestamp this write's oplog entry will carry."""
    from backupflows.sandbox.update import apply_update
    kwargs: dict[str, Any] = {"array_filters": array_filters}
    accepted = _engine_options()
    if "query" in accepted:
        kwargs["query"] = query
    if "cluster_time" in accepted:
        kwargs["cluster_time"] = lambda: Timestamp(*ts_parts(ctx.store.oplog.next_ts()))
    return apply_update(doc, update, **kwargs)


def _check_update_spec(spec: Mapping) -> tuple[Mapping, Any, bool, bool, list | None]:
    q, u = spec.get("q", {}), spec.get("u")
    if not isinstance(q, Mapping):
        raise CommandError(TYPE_MISMATCH, "BSON field 'q' must be an object", "TypeMismatch")
    if not isinstance(u, Mapping | list):
        raise CommandError(FAILED_TO_PARSE, "Update argument must be either an object or an "
                           "array")
    multi, upsert = bool(spec.get("multi")), bool(spec.get("upsert"))
    is_replacement = isinstance(u, Mapping) and u and not next(iter(u)).startswith("$")
    if multi and is_replacement:
        raise CommandError(FAILED_TO_PARSE, "multi update is not supported for "
                           "replacement-style update")
    return q, u, multi, upsert, spec.get("arrayFilters")


def update_one_doc(ctx: Ctx, coll: Collection, rid: int, u: Any, array_filters: list | None,
                   q: Mapping, stmt_id: int | None, extra: bytes = b"") -> tuple[dict, dict, bool]:
    """Apply ``u`` to the document at ``rid``: (old doc, new doc, modified)."""
    old_raw = coll.records[rid]
    old = decode(old_raw)
    outcome = apply(ctx, old, u, array_filters, q)
    if outcome.oplog_o is None:
        return old, outcome.new_doc, False
    new_raw = encode(outcome.new_doc)
    if id_key(new_raw) != id_key(old_raw):
        raise CommandError(IMMUTABLE_FIELD, "Performing an update on the path '_id' would "
                           "modify the immutable field '_id'")
    if len(new_raw) > MAX_DOC_SIZE:
        raise CommandError(BSON_TOO_LARGE, "Resulting document after update is larger than "
                           f"{MAX_DOC_SIZE}", "BSONObjectTooLarge")
    ctx.store.update(ctx.write, coll, rid, new_raw, outcome.oplog_o, stmt_id, extra,
                     old_doc=old, new_doc=outcome.new_doc)
    return old, outcome.new_doc, True


def upsert_doc(ctx: Ctx, coll: Collection, q: Mapping, u: Any, array_filters: list | None,
               stmt_id: int | None) -> dict:
    """Insert the document an upsert creates (an ``i`` entry); returns it."""
    from backupflows.sandbox.update import upsert_document
    doc = upsert_document(q, u, array_filters=array_filters)
    if "_id" not in doc:
        doc = {"_id": ObjectId(), **doc}
    raw = prepare_insert(encode(doc))
    ctx.store.insert(ctx.write, coll, raw, stmt_id)
    return decode(raw)


def _one_update(ctx: Ctx, coll: Collection | None, spec: Mapping, index: int,
                stmt_id: int) -> tuple[int, int, dict | None]:
    """(matched, modified, upserted {index, _id}) of one update statement."""
    q, u, multi, upsert, array_filters = _check_update_spec(spec)
    matched = modified = 0
    if coll is not None:
        for rid, _raw in plan.iter_matching(coll, q):
            matched += 1
            modified += update_one_doc(ctx, coll, rid, u, array_filters, q, stmt_id)[2]
            if not multi:
                break
    if matched or not upsert:
        return matched, modified, None
    coll = coll or ctx.store.ensure_collection(ctx.write, ctx.db, coll_name(ctx))[0]
    doc = upsert_doc(ctx, coll, q, u, array_filters, stmt_id)
    return 0, 0, {"index": index, "_id": doc["_id"]}


@command("update", write=True)
def update(ctx: Ctx) -> dict:
    specs = ctx.doc_list("updates")
    _check_batch(len(specs))
    coll = _target(ctx, create=False)
    retry = ctx.write.retry
    ordered = ctx.arg("ordered", True) is not False
    n = n_modified = 0
    upserted: list[dict] = []
    errors: list[dict] = []
    for i, (spec, stmt_id) in enumerate(zip(specs, _stmt_ids(ctx, len(specs)))):
        if retry is not None and stmt_id in retry.results:
            m, mod, up = retry.results[stmt_id]
        else:
            try:
                m, mod, up = _one_update(ctx, coll, spec, i, stmt_id)
            except CommandError as err:
                errors.append(_write_error(i, err))
                if ordered:
                    break
                continue
            if retry is not None:
                retry.results[stmt_id] = (m, mod, up)
        coll = coll or ctx.store.catalog.get(ctx.db, coll_name(ctx))
        n, n_modified = n + m + (1 if up else 0), n_modified + mod
        if up:
            upserted.append(up)
    reply: dict[str, Any] = {"n": n, "nModified": n_modified}
    if upserted:
        reply["upserted"] = upserted
    if errors:
        reply["writeErrors"] = errors
    return reply


# -- deletes -------------------------------------------------------------------

@command("delete", write=True)
def delete(ctx: Ctx) -> dict:
    specs = ctx.doc_list("deletes")
    _check_batch(len(specs))
    coll = _target(ctx, create=False)
    retry = ctx.write.retry
    ordered = ctx.arg("ordered", True) is not False
    n, errors = 0, []
    for i, (spec, stmt_id) in enumerate(zip(specs, _stmt_ids(ctx, len(specs)))):
        if retry is not None and stmt_id in retry.results:
            n += retry.results[stmt_id]
            continue
        try:
            q, limit = spec.get("q", {}), spec.get("limit", 0)
            if not isinstance(q, Mapping) or limit not in (0, 1):
                raise CommandError(FAILED_TO_PARSE, "delete needs a 'q' object and a "
                                   "'limit' of 0 or 1")
            deleted = 0
            if coll is not None:
                for rid, _raw in plan.iter_matching(coll, q):
                    ctx.store.delete(ctx.write, coll, rid, stmt_id)
                    deleted += 1
                    if limit == 1:
                        break
        except CommandError as err:
            errors.append(_write_error(i, err))
            if ordered:
                break
            continue
        n += deleted
        if retry is not None:
            retry.results[stmt_id] = deleted
    return {"n": n, "writeErrors": errors} if errors else {"n": n}


# -- findAndModify -------------------------------------------------------------

def _retry_image(ctx: Ctx, kind: str) -> bytes:
    """``needsRetryImage`` of a retryable findAndModify (7.0 keeps the image in
    config.image_collection, which is not replicated)."""
    if ctx.write.retry is None:
        return b""
    return wire.element("needsRetryImage", 0x02, wire.string(kind))


def _first_match(ctx: Ctx, coll: Collection, query: Mapping, sort: Mapping | None
                 ) -> int | None:
    if not sort:
        return next((rid for rid, _raw in plan.iter_matching(coll, query)), None)
    from backupflows.sandbox.query import sort_docs
    docs = []
    for rid, raw in plan.iter_matching(coll, query):
        doc = decode(raw)
        docs.append((rid, doc))
    if not docs:
        return None
    by_identity = {id(doc): rid for rid, doc in docs}
    first = sort_docs([doc for _rid, doc in docs], sort)[0]
    return by_identity[id(first)]


def _fam_result(value: dict | None, fields: Mapping | None, n: int, updated: bool,
                upserted: Any = None) -> dict:
    if value is not None and fields:
        from backupflows.sandbox.query import project
        value = project(value, fields)
    last: dict[str, Any] = {"n": n, "updatedExisting": updated}
    if upserted is not None:
        last["upserted"] = upserted
    return {"lastErrorObject": last, "value": value}


@command("findAndModify", "findandmodify", write=True)
def find_and_modify(ctx: Ctx) -> dict:
    query, sort = ctx.arg("query") or {}, ctx.arg("sort")
    remove, u = bool(ctx.arg("remove")), ctx.arg("update")
    if remove == (u is not None):
        raise CommandError(FAILED_TO_PARSE, "Either an update or remove=true must be "
                           "specified")
    retry, stmt_id = ctx.write.retry, 0
    if retry is not None and stmt_id in retry.results:
        return retry.results[stmt_id]
    coll = _target(ctx, create=False)
    rid = None if coll is None else _first_match(ctx, coll, query, sort)
    fields = ctx.arg("fields")
    if rid is not None and remove:
        old = decode(coll.records[rid])
        ctx.store.delete(ctx.write, coll, rid, stmt_id, _retry_image(ctx, "preImage"))
        result = _fam_result(old, fields, 1, False)
    elif rid is not None:
        q, u, _multi, _upsert, array_filters = _check_update_spec(
            {"q": query, "u": u, "arrayFilters": ctx.arg("arrayFilters")})
        image = "postImage" if ctx.arg("new") else "preImage"
        old, new, _ = update_one_doc(ctx, coll, rid, u, array_filters, q, stmt_id,
                                     _retry_image(ctx, image))
        result = _fam_result(new if ctx.arg("new") else old, fields, 1, True)
    elif remove or not ctx.arg("upsert"):
        result = _fam_result(None, fields, 0, False)
    else:
        coll = coll or ctx.store.ensure_collection(ctx.write, ctx.db, coll_name(ctx))[0]
        doc = upsert_doc(ctx, coll, query, u, ctx.arg("arrayFilters"), stmt_id)
        result = _fam_result(doc if ctx.arg("new") else None, fields, 1, False, doc["_id"])
    if retry is not None:
        retry.results[stmt_id] = result
    return result
