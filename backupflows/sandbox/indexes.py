"""Index specifications and unique-key enforcement.

``normalize_spec`` shapes a user's index spec the way the server stores and
logs it (``IndexCatalogImpl::_fixIndexSpec`` in mongodb/mongo): ``v`` first,
then ``unique``/``hidden``/``prepareUnique`` when true, then ``key`` and
``name``, then every other option in the order the user gave it; ``ns`` and
``dropDups`` are dropped. The sandbox keeps indexes as metadata and enforces
only uniqueness (``unique: true`` secondary indexes, honouring ``sparse`` and
``partialFilterExpression``); other index kinds never change query results.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backupflows.bsonorder import value_key
from backupflows.sandbox.errors import (
    BAD_VALUE,
    FAILED_TO_PARSE,
    CommandError,
)

INVALID_INDEX_SPEC_OPTION = 197
CANNOT_CREATE_INDEX = 67

ID_INDEX = {"v": 2, "key": {"_id": 1}, "name": "_id_"}

_ALLOWED = {
    "key", "name", "v", "unique", "sparse", "expireAfterSeconds",
    "partialFilterExpression", "hidden", "prepareUnique", "collation",
    "background", "weights", "default_language", "language_override",
    "textIndexVersion", "2dsphereIndexVersion", "bits", "min", "max",
    "bucketSize", "wildcardProjection", "storageEngine", "ns", "dropDups",
    "coarsestIndexedLevel", "finestIndexedLevel", "columnstoreProjection",
}
_HOISTED = ("unique", "hidden", "prepareUnique")
_STRING_KINDS = {"text", "2d", "2dsphere", "hashed", "geoHaystack", "columnstore"}


def default_name(key: Mapping) -> str:
    """The server's default index name: ``a_1_b_-1``."""
    return "_".join(f"{k}_{v}" for k, v in key.items())


def _check_key(key: Any) -> None:
    if not isinstance(key, Mapping) or not key:
        raise CommandError(CANNOT_CREATE_INDEX,
                           "Index keys cannot be an empty field.",
                           "CannotCreateIndex")
    for name, kind in key.items():
        if not name:
            raise CommandError(CANNOT_CREATE_INDEX, "Index keys cannot be an empty field.",
                               "CannotCreateIndex")
        if isinstance(kind, str):
            if kind not in _STRING_KINDS:
                raise CommandError(CANNOT_CREATE_INDEX, f"Unknown index plugin '{kind}'",
                                   "CannotCreateIndex")
        elif isinstance(kind, bool) or not isinstance(kind, int | float) or kind == 0:
            raise CommandError(CANNOT_CREATE_INDEX,
                               f"Values in the index key pattern can't be 0: {dict(key)}",
                               "CannotCreateIndex")


def _fix_key(key: Mapping) -> dict:
    """``fixIndexKey``: an ``_id`` index pattern becomes ``{_id: 1}``."""
    if list(key) == ["_id"] and (key["_id"] in (1, 1.0) or isinstance(key["_id"], bool)):
        return {"_id": 1}
    return dict(key)


def normalize_spec(spec: Mapping) -> dict:
    """Validate a user index spec and return it as the server stores it."""
    if not isinstance(spec, Mapping):
        raise CommandError(FAILED_TO_PARSE, "index specification must be an object")
    for field in spec:
        if field not in _ALLOWED:
            raise CommandError(INVALID_INDEX_SPEC_OPTION,
                               f"The field '{field}' is not valid for an index specification."
                               f" Specification: {dict(spec)}",
                               "InvalidIndexSpecificationOption")
    _check_key(spec.get("key"))
    name = spec.get("name", default_name(spec["key"]))
    if not isinstance(name, str) or not name:
        raise CommandError(BAD_VALUE, "The index name must be a non-empty string")
    out: dict[str, Any] = {"v": int(spec.get("v", 2))}
    for flag in _HOISTED:
        if spec.get(flag):
            out[flag] = True
    out["key"] = _fix_key(spec["key"])
    out["name"] = name
    for field, value in spec.items():
        if field not in ("v", "key", "name", "ns", "dropDups", "_id") and field not in _HOISTED:
            out[field] = value
    _check_options(out)
    return out


def _check_options(spec: dict) -> None:
    ttl = spec.get("expireAfterSeconds")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0):
        raise CommandError(CANNOT_CREATE_INDEX,
                           "TTL index 'expireAfterSeconds' option must be a non-negative number",
                           "CannotCreateIndex")
    if spec["name"] == "_id_" and spec["key"] != {"_id": 1}:
        raise CommandError(BAD_VALUE, "The index name '_id_' is reserved for the _id index")
    if spec.get("unique") and spec.get("key") and any(
            isinstance(v, str) and v == "hashed" for v in spec["key"].values()):
        raise CommandError(CANNOT_CREATE_INDEX, "Hashed indexes do not currently support"
                           " uniqueness", "CannotCreateIndex")


def same_options(a: Mapping, b: Mapping) -> bool:
    """Whether two specs with the same key describe the same index."""
    ignore = {"name", "v", "background"}
    return ({k: v for k, v in a.items() if k not in ignore}
            == {k: v for k, v in b.items() if k not in ignore})


# -- unique keys -------------------------------------------------------------

def _lookup(doc: Any, path: list[str]) -> list[Any]:
    """Values at a dotted path, expanding arrays (multikey); [] when missing."""
    if not path:
        if isinstance(doc, list):
            return list(doc) if doc else [doc]
        return [doc]
    if isinstance(doc, Mapping):
        if path[0] not in doc:
            return []
        return _lookup(doc[path[0]], path[1:])
    if isinstance(doc, list):
        if path[0].isdigit() and int(path[0]) < len(doc):
            return _lookup(doc[int(path[0])], path[1:])
        out: list[Any] = []
        for item in doc:
            if isinstance(item, Mapping):
                out.extend(_lookup(item, path))
        return out
    return []


def index_keys(doc: Mapping, key_pattern: Mapping, sparse: bool = False) -> list[bytes]:
    """The index keys a document produces (server order bytes, one per
    multikey combination), or [] when a sparse index skips it."""
    per_field: list[list[Any]] = []
    present = False
    for path in key_pattern:
        values = _lookup(doc, path.split("."))
        present = present or bool(values)
        per_field.append(values or [None])
    if sparse and not present:
        return []
    keys = [b""]
    for values in per_field:
        keys = [k + value_key(v) for k in keys for v in values]
    return sorted(set(keys))


def key_value_doc(doc: Mapping, key_pattern: Mapping) -> dict:
    """``keyValue`` of a duplicate key error: the indexed fields of ``doc``."""
    out = {}
    for path in key_pattern:
        values = _lookup(doc, path.split("."))
        out[path] = values[0] if values else None
    return out
