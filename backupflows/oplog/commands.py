"""Command entries (``op: c``): collection and index DDL.

Every handler is idempotent: DDL already reflected in the head (create of an
existing collection, drop of a missing one, an index already built) does
nothing. Namespace conflicts are solved as the server's oplog application
solves them: a create or rename into a namespace held by a collection with a
*different* UUID first moves that collection aside to a temporary name
(a later entry of a consistent oplog drops or renames it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bson.binary import Binary

from backupflows.errors import ResyncRequired
from backupflows.head import rawdoc
from backupflows.head.catalog import COLLECTION, Collection
from backupflows.head.store import DEFAULT_ID_INDEX, create_collection
from backupflows.oplog import collmod, txn, views
from backupflows.oplog.crud import displace, drop, target
from backupflows.oplog.entry import Entry, is_internal

if TYPE_CHECKING:
    from backupflows.head.writer import HeadWriter
    from backupflows.oplog.applier import Context

IGNORED = frozenset(("dbCheck",))


def apply_command(ctx: Context, e: Entry) -> None:
    if e.db in ("local", ""):
        return
    o_raw = e.o()
    try:
        name = (rawdoc.first_name(o_raw) or b"").decode()
    except UnicodeDecodeError:
        raise e.error("command name is not UTF-8") from None
    handler = _HANDLERS.get(name)
    if handler is not None:
        handler(ctx, e, o_raw)
    elif name not in IGNORED:
        raise e.error(f"unknown command {name!r}")


def apply_view_crud(ctx: Context, e: Entry) -> None:
    views.apply_crud(ctx.w, e)


def _coll_name(e: Entry, o_raw: bytes, field: bytes) -> str:
    value = rawdoc.value(o_raw, field)
    if not isinstance(value, str) or not value:
        raise e.error(f"'{field.decode()}' must name a collection")
    return value


def _split_ns(e: Entry, ns: Any, what: str) -> tuple[str, str]:
    if not isinstance(ns, str) or "." not in ns:
        raise e.error(f"'{what}' must be a full namespace 'db.collection', got {ns!r}")
    db, coll = ns.split(".", 1)
    return db, coll


def _create(ctx: Context, e: Entry, o_raw: bytes) -> None:
    name = _coll_name(e, o_raw, b"create")
    w, db = ctx.w, e.db
    if is_internal(f"{db}.{name}") or name == "system.views":
        return
    if rawdoc.field(o_raw, b"viewOn") is not None:
        views.create_view(w, db, name, rawdoc.without(o_raw, (b"create",)))
        return
    known = w.catalog.by_uuid.get(e.ui) if e.ui is not None else None
    occupant = w.catalog.get(db, name)
    if known is not None:
        # Replaying over a later state: the collection exists under the name
        # a later rename gave it; take it back (the server does the same).
        if known is not occupant:
            if occupant is not None:
                displace(w, occupant)
            w.flush()
            w.catalog.rename(known, db, name, w.seq)
        return
    if occupant is not None:
        if occupant.holds_documents and (occupant.uuid is None or e.ui is None):
            if occupant.uuid is None and e.ui is not None:
                w.catalog.set_uuid(occupant, e.ui)
            return
        displace(w, occupant)
    options = rawdoc.without(o_raw, (b"create", b"idIndex"))
    if rawdoc.field(options, b"timeseries") is not None and not name.startswith("system.buckets."):
        views.create_timeseries(w, db, name, e.ui, options)
        return
    create_collection(w, db, name, e.ui, COLLECTION, options, _id_indexes(o_raw, options))


def _id_indexes(o_raw: bytes, options: bytes) -> list[bytes]:
    id_index = rawdoc.subdocument(o_raw, b"idIndex")
    if id_index is not None:
        return [id_index]
    if rawdoc.field(options, b"clusteredIndex") is not None:
        return []
    if rawdoc.value(options, b"autoIndexId") is False:
        return []
    return [DEFAULT_ID_INDEX]


def _drop(ctx: Context, e: Entry, o_raw: bytes) -> None:
    name = _coll_name(e, o_raw, b"drop")
    if name == "system.views":
        views.drop_all(ctx.w, e.db)
        return
    c = target(ctx.w, e.db, name, e.ui)
    if c is not None:
        drop(ctx.w, c)


def _drop_database(ctx: Context, e: Entry, o_raw: bytes) -> None:
    for c in ctx.w.catalog.in_db(e.db):
        drop(ctx.w, c)


def _rename(ctx: Context, e: Entry, o_raw: bytes) -> None:
    w = ctx.w
    src = _split_ns(e, rawdoc.value(o_raw, b"renameCollection"), "renameCollection")
    dst = _split_ns(e, rawdoc.value(o_raw, b"to"), "to")
    if is_internal(".".join(src)):
        return
    c = target(w, src[0], src[1], e.ui)
    drop_target = rawdoc.value(o_raw, b"dropTarget")
    if isinstance(drop_target, Binary) and drop_target.subtype == 4:
        # After this entry the collection with that UUID exists nowhere.
        victim = w.catalog.by_uuid.get(bytes(drop_target))
        if victim is not None and victim is not c:
            drop(w, victim)
    if c is None:
        return
    if is_internal(".".join(dst)):
        drop(w, c)
        return
    if (c.db, c.name) != dst:
        _clear_target(w, dst, drop_target)
        w.flush()
        w.catalog.rename(c, dst[0], dst[1], w.seq)
    if rawdoc.value(o_raw, b"stayTemp") is not True and rawdoc.field(c.options, b"temp"):
        w.catalog.set_options(c, rawdoc.without(c.options, (b"temp",)))


def _clear_target(w: HeadWriter, dst: tuple[str, str], drop_target: Any) -> None:
    """Free ``dst`` for a rename (dropTarget: a UUID, already dropped, or a
    bool on 4.0): drop the occupant it names, move any other aside."""
    occupant = w.catalog.get(*dst)
    if occupant is None:
        return
    if drop_target is True or (occupant.uuid is None and drop_target):
        drop(w, occupant)
    else:
        displace(w, occupant)


def _create_indexes(ctx: Context, e: Entry, o_raw: bytes) -> None:
    name = _coll_name(e, o_raw, b"createIndexes")
    c = target(ctx.w, e.db, name, e.ui)
    if c is None:
        return
    spec = rawdoc.subdocument(o_raw, b"spec")
    if spec is None or rawdoc.field(o_raw, b"key") is not None:
        spec = rawdoc.without(o_raw, (b"createIndexes",))
    _add_index(ctx.w, e, c, spec)


def _add_index(w: HeadWriter, e: Entry, c: Collection, spec: bytes) -> None:
    name = rawdoc.field(spec, b"name")
    key = rawdoc.field(spec, b"key")
    if name is None or name[0] != 0x02 or key is None or key[0] != 0x03:
        raise e.error("index spec needs a string 'name' and a document 'key'")
    w.flush()
    w.catalog.add_index(c, spec)


def _build_args(ctx: Context, e: Entry, o_raw: bytes, field: bytes
                ) -> tuple[Collection | None, bytes, bytes]:
    name = _coll_name(e, o_raw, field)
    build_uuid = rawdoc.value(o_raw, b"indexBuildUUID")
    specs = rawdoc.subdocument(o_raw, b"indexes")
    if not isinstance(build_uuid, Binary) or specs is None:
        raise e.error("index build needs 'indexBuildUUID' and an 'indexes' array")
    return target(ctx.w, e.db, name, e.ui), bytes(build_uuid), specs


def _start_build(ctx: Context, e: Entry, o_raw: bytes) -> None:
    c, build_uuid, specs = _build_args(ctx, e, o_raw, b"startIndexBuild")
    if c is not None:
        ctx.w.catalog.start_build(c, build_uuid, specs)


def _commit_build(ctx: Context, e: Entry, o_raw: bytes) -> None:
    c, build_uuid, specs = _build_args(ctx, e, o_raw, b"commitIndexBuild")
    if c is None:
        return
    for t, spec in rawdoc.array_items(specs):
        if t != 0x03:
            raise e.error("'indexes' must hold index spec documents")
        _add_index(ctx.w, e, c, spec)
    ctx.w.catalog.finish_build(c, build_uuid)


def _abort_build(ctx: Context, e: Entry, o_raw: bytes) -> None:
    c, build_uuid, _ = _build_args(ctx, e, o_raw, b"abortIndexBuild")
    if c is not None:
        ctx.w.catalog.finish_build(c, build_uuid)


def _drop_indexes(ctx: Context, e: Entry, o_raw: bytes) -> None:
    field = rawdoc.first_name(o_raw) or b""
    name = _coll_name(e, o_raw, field)
    c = target(ctx.w, e.db, name, e.ui)
    if c is None:
        return
    which = rawdoc.value(o_raw, b"index")
    for index_name in collmod.matching_indexes(ctx.w, c, which, e):
        ctx.w.catalog.drop_index(c, index_name)


def _coll_mod(ctx: Context, e: Entry, o_raw: bytes) -> None:
    name = _coll_name(e, o_raw, b"collMod")
    c = target(ctx.w, e.db, name, e.ui)
    if c is not None:
        collmod.apply(ctx.w, e, c, o_raw)


def _convert_to_capped(ctx: Context, e: Entry, o_raw: bytes) -> None:
    name = _coll_name(e, o_raw, b"convertToCapped")
    c = target(ctx.w, e.db, name, e.ui)
    if c is None:
        return
    size = rawdoc.value(o_raw, b"size")
    if not isinstance(size, int | float) or isinstance(size, bool):
        raise e.error("convertToCapped needs a numeric 'size'")
    changes = [rawdoc.element("capped", True), rawdoc.element("size", collmod.number(size))]
    collmod.set_options(ctx.w, c, [(b"capped", changes[0]), (b"size", changes[1])])


def _empty_capped(ctx: Context, e: Entry, o_raw: bytes) -> None:
    c = target(ctx.w, e.db, _coll_name(e, o_raw, b"emptycapped"), e.ui)
    if c is not None:
        ctx.w.truncate(c)


def _import_collection(ctx: Context, e: Entry, o_raw: bytes) -> None:
    raise e.error("importCollection brings data that is not in the oplog: resync required",
                  ResyncRequired)


_HANDLERS = {
    "create": _create,
    "drop": _drop,
    "dropDatabase": _drop_database,
    "renameCollection": _rename,
    "createIndexes": _create_indexes,
    "startIndexBuild": _start_build,
    "commitIndexBuild": _commit_build,
    "abortIndexBuild": _abort_build,
    "dropIndexes": _drop_indexes,
    "deleteIndexes": _drop_indexes,
    "dropIndex": _drop_indexes,
    "collMod": _coll_mod,
    "convertToCapped": _convert_to_capped,
    "emptycapped": _empty_capped,
    "importCollection": _import_collection,
    "applyOps": txn.apply_ops,
    "commitTransaction": txn.commit_transaction,
    "abortTransaction": txn.abort_transaction,
}

