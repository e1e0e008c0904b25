"""DDL: create, drop, dropDatabase, renameCollection, createIndexes,
dropIndexes, collMod, each logged as ``OpObserverImpl`` logs it (mongodb/mongo
``src/mongo/db/op_observer/op_observer_impl.cpp``):

- ``create``: ``{create, <options>, idIndex}`` (views: an insert into
  ``<db>.system.views``, created first if needed);
- ``drop``: ``{drop}`` with ``o2: {numRecords}``; ``dropDatabase``: one drop
  per collection, then ``{dropDatabase: 1}`` without ``ui``;
- ``renameCollection``: ``{renameCollection, to, stayTemp, [dropTarget: uuid]}``
  on the source database, ``o2: {numRecords}`` only with ``dropTarget``;
  across databases the server copies: ``create`` of
  ``<db>.tmpXXXXX.renameCollection`` (``temp: true``), its indexes, one insert
  per document, the rename of the temporary collection, then ``drop`` of the
  source (so the UUID changes, as on the server);
- indexes: ``createIndexes`` per index on an empty collection, else
  ``startIndexBuild`` + ``commitIndexBuild`` (``abortIndexBuild`` when a unique
  index meets duplicates); ``dropIndexes`` with ``o2`` = the dropped spec;
- ``collMod``: the command (index given by name) with ``o2:
  {collectionOptions_old, [indexOptions_old]}``.
"""

from __future__ import annotations

import random
import string
import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

from bson.int64 import Int64

from backupflows.sandbox import indexes as idx
from backupflows.sandbox import options as opts
from backupflows.sandbox.commands import Ctx, command
from backupflows.sandbox.commands_find import coll_name
from backupflows.sandbox.errors import (
    BAD_VALUE,
    INDEX_KEY_SPECS_CONFLICT,
    INDEX_NOT_FOUND,
    INDEX_OPTIONS_CONFLICT,
    INVALID_OPTIONS,
    NAMESPACE_EXISTS,
    NAMESPACE_NOT_FOUND,
    TYPE_MISMATCH,
    CommandError,
)
from backupflows.sandbox.storage import Collection
from backupflows.sandbox.store import _number as number

_INTERNAL_DBS = ("admin", "config", "local")


def _existing(ctx: Ctx, name: str | None = None) -> Collection:
    name = name or coll_name(ctx)
    coll = ctx.store.catalog.get(ctx.db, name)
    if coll is None:
        raise CommandError(NAMESPACE_NOT_FOUND, f"ns does not exist: {ctx.db}.{name}")
    return coll


# -- create / drop ---------------------------------------------------------------

@command("create")
def create(ctx: Ctx) -> dict:
    name = coll_name(ctx)
    options = {k: v for k, v in ctx.cmd.items() if k != "create"}
    normalized = opts.normalize(options)
    if "viewOn" in normalized:
        ctx.store.create_view(ctx.write, ctx.db, name, normalized["viewOn"],
                              list(normalized.get("pipeline") or []),
                              normalized.get("collation"))
        return {}
    existing = ctx.store.catalog.get(ctx.db, name)
    if existing is not None and existing.options == normalized:
        return {}  # 7.0: create is idempotent when the options match
    ctx.store.create_collection(ctx.write, ctx.db, name, options)
    return {}


def _drop_view(ctx: Ctx, name: str) -> bool:
    views = ctx.store.catalog.get(ctx.db, "system.views")
    if views is None or not ctx.store.catalog.view(ctx.db, name):
        return False
    from backupflows.sandbox.plan import iter_matching
    for rid, _raw in iter_matching(views, {"_id": f"{ctx.db}.{name}"}):
        ctx.store.delete(ctx.write, views, rid)
    return True


@command("drop")
def drop(ctx: Ctx) -> dict:
    name = coll_name(ctx)
    ns = f"{ctx.db}.{name}"
    if ctx.db == "local" and name == "oplog.rs":
        raise CommandError(20, "can't drop live oplog while replicating", "IllegalOperation")
    coll = ctx.store.catalog.get(ctx.db, name)
    if coll is None:
        _drop_view(ctx, name)
        return {"ns": ns}  # 7.0: dropping a missing namespace succeeds
    n_indexes = len(coll.indexes)
    ctx.store.drop_collection(ctx.write, coll)
    return {"nIndexesWas": n_indexes, "ns": ns}


@command("dropDatabase")
def drop_database(ctx: Ctx) -> dict:
    if ctx.db in _INTERNAL_DBS:
        raise CommandError(20, f"Dropping the '{ctx.db}' database is prohibited.",
                           "IllegalOperation")
    colls = ctx.store.catalog.collections(ctx.db)
    if not colls:
        return {}
    for coll in colls:
        ctx.store.drop_collection(ctx.write, coll)
    ctx.store.log_command(ctx.write, ctx.db, {"dropDatabase": 1})
    return {"dropped": ctx.db}


# -- renameCollection --------------------------------------------------------------

def _split_ns(value: Any, what: str) -> tuple[str, str]:
    if not isinstance(value, str) or "." not in value:
        raise CommandError(73, f"Invalid {what} namespace: {value}", "InvalidNamespace")
    db, _, name = value.partition(".")
    return db, name


@command("renameCollection")
def rename_collection(ctx: Ctx) -> dict:
    if ctx.db != "admin":
        raise CommandError(13, "renameCollection may only be run against the admin database.",
                           "Unauthorized")
    src_db, src_name = _split_ns(ctx.cmd["renameCollection"], "source")
    dst_db, dst_name = _split_ns(ctx.arg("to"), "target")
    from backupflows.sandbox.store import check_coll_name
    check_coll_name(dst_db, dst_name)
    catalog = ctx.store.catalog
    source = catalog.get(src_db, src_name)
    if source is None:
        raise CommandError(NAMESPACE_NOT_FOUND, "source namespace does not exist")
    if src_db in ("local",) or (src_db, src_name) == (dst_db, dst_name):
        raise CommandError(INVALID_OPTIONS if src_db != "local" else 20,
                           "Can't rename a collection to itself" if src_db != "local"
                           else "can't rename in the local database")
    target = catalog.get(dst_db, dst_name)
    if catalog.view(dst_db, dst_name):
        raise CommandError(NAMESPACE_EXISTS, "a view already exists with that name")
    if target is not None and not ctx.arg("dropTarget"):
        raise CommandError(NAMESPACE_EXISTS, "target namespace exists")
    stay_temp = bool(ctx.arg("stayTemp"))
    if src_db == dst_db:
        _rename_within(ctx, source, dst_name, target, stay_temp)
    else:
        _rename_across(ctx, source, dst_db, dst_name, target, stay_temp)
    return {}


def _rename_within(ctx: Ctx, source: Collection, dst_name: str, target: Collection | None,
                   stay_temp: bool) -> None:
    store = ctx.store
    o: dict[str, Any] = {"renameCollection": source.ns, "to": f"{source.db}.{dst_name}",
                         "stayTemp": stay_temp}
    o2 = None
    if target is not None:
        o["dropTarget"] = target.uuid
        o2 = {"numRecords": number(len(target))}
        store.catalog.remove(target.db, target.name)
        store.cursors.kill_for_collection(target)
    store.catalog.remove(source.db, source.name)
    store.cursors.kill_for_collection(source)
    source.name = dst_name
    if not stay_temp:
        source.options.pop("temp", None)
    store.catalog.add(source)
    store.log_command(ctx.write, source.db, o, ui=source.uuid, o2=o2)


def _temp_name(ctx: Ctx, db: str) -> str:
    while True:
        suffix = "".join(random.choices(string.ascii_letters + string.digits, k=5))
        name = f"tmp{suffix}.renameCollection"
        if ctx.store.catalog.get(db, name) is None:
            return name


def _rename_across(ctx: Ctx, source: Collection, dst_db: str, dst_name: str,
                   target: Collection | None, stay_temp: bool) -> None:
    store = ctx.store
    options = {**source.options, "temp": True}
    temp = store.create_collection(ctx.write, dst_db, _temp_name(ctx, dst_db), options)
    for spec in list(source.indexes.values())[1:]:
        temp.add_index(dict(spec))
        store.log_command(ctx.write, dst_db, {"createIndexes": temp.name, **spec},
                          ui=temp.uuid)
    for raw in list(source.records.values()):
        store.insert(ctx.write, temp, raw)
    _rename_within(ctx, temp, dst_name, target, stay_temp)
    store.drop_collection(ctx.write, source)


# -- indexes ---------------------------------------------------------------------

def _new_specs(coll: Collection, raw_specs: list) -> list[dict]:
    """Specs not present yet; conflicts raise as the server does."""
    new: list[dict] = []
    for raw in raw_specs:
        spec = idx.normalize_spec(raw)
        by_name = coll.indexes.get(spec["name"])
        by_key = [s for s in coll.indexes.values() if s["key"] == spec["key"]]
        if by_name is not None:
            if by_name["key"] != spec["key"]:
                raise CommandError(INDEX_KEY_SPECS_CONFLICT,
                                   f"An existing index has the same name as the requested "
                                   f"index. When index names are not specified, they are "
                                   f"auto generated and can cause conflicts. Please refer to "
                                   f"our documentation. Requested index: {spec}, existing "
                                   f"index: {by_name}")
            if not idx.same_options(by_name, spec):
                raise CommandError(INDEX_OPTIONS_CONFLICT,
                                   f"An existing index has the same name as the requested "
                                   f"index but different options. Requested index: {spec}, "
                                   f"existing index: {by_name}")
            continue
        same = [s for s in by_key if idx.same_options(s, spec)]
        if same:
            raise CommandError(INDEX_OPTIONS_CONFLICT,
                               f"Index already exists with a different name: {same[0]['name']}")
        if any(s["name"] == spec["name"] for s in new):
            raise CommandError(BAD_VALUE, f"Identical index names in one request: "
                               f"{spec['name']}")
        new.append(spec)
    return new


def _build_indexes(ctx: Ctx, coll: Collection, specs: list[dict]) -> None:
    store = ctx.store
    if not len(coll) or ctx.write.txn is not None:
        for spec in specs:
            coll.add_index(spec)
            store.log_command(ctx.write, coll.db, {"createIndexes": coll.name, **spec},
                              ui=coll.uuid)
        return
    build = {"indexBuildUUID": uuidlib.uuid4(), "indexes": specs}
    store.log_command(ctx.write, coll.db, {"startIndexBuild": coll.name, **build}, ui=coll.uuid)
    added: list[str] = []
    try:
        for spec in specs:
            coll.add_index(spec)
            added.append(spec["name"])
    except CommandError as err:
        for name in added:
            coll.drop_index(name)
        cause = {"ok": False, "code": err.code, "codeName": err.code_name,
                 "errmsg": err.message}
        store.log_command(ctx.write, coll.db, {"abortIndexBuild": coll.name, **build,
                                               "cause": cause}, ui=coll.uuid)
        raise
    store.log_command(ctx.write, coll.db, {"commitIndexBuild": coll.name, **build},
                      ui=coll.uuid)


@command("createIndexes")
def create_indexes(ctx: Ctx) -> dict:
    raw_specs = ctx.arg("indexes")
    if not isinstance(raw_specs, list) or not raw_specs:
        raise CommandError(BAD_VALUE, "Must specify at least one index to create")
    name = coll_name(ctx)
    if ctx.store.catalog.view(ctx.db, name):
        raise CommandError(166, f"Namespace {ctx.db}.{name} is a view, not a collection",
                           "CommandNotSupportedOnView")
    coll = ctx.store.catalog.get(ctx.db, name)
    created = coll is None
    if coll is None:
        for raw in raw_specs:
            idx.normalize_spec(raw)
        coll = ctx.store.create_collection(ctx.write, ctx.db, name)
    before = len(coll.indexes)
    specs = _new_specs(coll, raw_specs)
    reply: dict[str, Any] = {"numIndexesBefore": before}
    if not specs:
        reply.update(numIndexesAfter=before, note="all indexes already exist")
        return reply
    _build_indexes(ctx, coll, specs)
    reply.update(numIndexesAfter=len(coll.indexes), createdCollectionAutomatically=created)
    return reply


def _indexes_to_drop(coll: Collection, which: Any) -> list[dict]:
    if which == "*":
        return list(coll.indexes.values())[1:]
    names = which if isinstance(which, list) else [which]
    out = []
    for item in names:
        spec = coll.find_index(item)
        if spec is None:
            raise CommandError(INDEX_NOT_FOUND, f"index not found with name [{item}]"
                               if isinstance(item, str) else
                               f"can't find index with key: {dict(item)}")
        if spec["name"] == "_id_":
            raise CommandError(INVALID_OPTIONS, "cannot drop _id index")
        out.append(spec)
    return out


@command("dropIndexes", "deleteIndexes")
def drop_indexes(ctx: Ctx) -> dict:
    coll = _existing(ctx)
    which = ctx.arg("index")
    if not isinstance(which, str | list | Mapping):
        raise CommandError(BAD_VALUE, "'index' must be a name, a key pattern, '*' or a list")
    before = len(coll.indexes)
    for spec in _indexes_to_drop(coll, which):
        coll.drop_index(spec["name"])
        ctx.store.log_command(ctx.write, coll.db, {"dropIndexes": coll.name,
                                                   "index": spec["name"]},
                              ui=coll.uuid, o2=spec)
    return {"nIndexesWas": before}


# -- collMod -----------------------------------------------------------------------

_COLLMOD_OPTIONS = ("validator", "validationLevel", "validationAction", "viewOn", "pipeline",
                    "expireAfterSeconds", "changeStreamPreAndPostImages", "index")
# The order makeCollModCmdObj (op_observer_util.cpp) logs them in.
_INDEX_OPTIONS = ("expireAfterSeconds", "hidden", "unique", "prepareUnique", "forceNonUnique")


def _coll_mod_index(coll: Collection, change: Any) -> tuple[dict, dict, dict]:
    """Apply an index change: (oplog ``index`` doc, indexOptions_old, reply)."""
    if not isinstance(change, Mapping):
        raise CommandError(TYPE_MISMATCH, "'index' must be an object", "TypeMismatch")
    spec = coll.find_index(change.get("name") or change.get("keyPattern") or "")
    if spec is None:
        raise CommandError(INDEX_NOT_FOUND, f"cannot find index {dict(change)} for ns "
                           f"{coll.ns}")
    logged: dict[str, Any] = {"name": spec["name"]}
    old: dict[str, Any] = {}
    reply: dict[str, Any] = {}
    for option in _INDEX_OPTIONS:
        if option not in change:
            continue
        value = change[option]
        if option == "unique" and value and not spec.get("prepareUnique"):
            raise CommandError(INVALID_OPTIONS, "Cannot make index unique with "
                               "'prepareUnique=false'. Run collMod to set it first.")
        if option == "expireAfterSeconds":
            value = Int64(value)  # durationCount<Seconds>: a long long
        if option in ("expireAfterSeconds", "hidden", "prepareUnique") and option in spec:
            old[option] = Int64(spec[option]) if option == "expireAfterSeconds" \
                else spec[option]
        elif option in ("hidden", "prepareUnique"):
            old[option] = False
        reply[f"{option}_old"] = spec.get(option, False if option != "expireAfterSeconds"
                                          else None)
        reply[f"{option}_new"] = value
        logged[option] = value
        _set_index_option(coll, spec, option, value)
    return logged, old, {k: v for k, v in reply.items() if v is not None}


def _set_index_option(coll: Collection, spec: dict, option: str, value: Any) -> None:
    if option == "forceNonUnique":
        spec.pop("unique", None)
        coll.unique.pop(spec["name"], None)
    elif option == "unique" and value:
        spec.pop("prepareUnique", None)
        coll.drop_index(spec["name"])
        coll.add_index({**spec, "unique": True})
    elif option in ("hidden", "prepareUnique") and not value:
        spec.pop(option, None)
    else:
        spec[option] = value



@command("collMod")
def coll_mod(ctx: Ctx) -> dict:
    coll = _existing(ctx)
    for field in ctx.cmd:
        if field not in _COLLMOD_OPTIONS and field != "collMod" and field not in opts._GENERIC:
            raise CommandError(40415, f"BSON field 'collMod.{field}' is an unknown field.",
                               "Location40415")
    old_options = {"uuid": coll.uuid, **coll.options}
    opts._check_strings(ctx.cmd)
    o2: dict[str, Any] = {"collectionOptions_old": old_options}
    reply: dict[str, Any] = {}
    index_doc = None
    if "index" in ctx.cmd:
        index_doc, o2["indexOptions_old"], reply = _coll_mod_index(coll, ctx.cmd["index"])
    # The command as given (generic arguments aside), the index named by name.
    o = {field: (index_doc if field == "index" else value) for field, value in ctx.cmd.items()
         if field == "collMod" or field in _COLLMOD_OPTIONS}
    for field in ("validator", "validationLevel", "validationAction"):
        if field in ctx.cmd:
            coll.options[field] = ctx.cmd[field]
    coll.options = opts.normalize(coll.options) if coll.options else {}
    ctx.store.log_command(ctx.write, coll.db, o, ui=coll.uuid, o2=o2)
    return reply
