"""Collection options, validated and ordered as the server stores and logs them.

The order is ``CollectionOptions::appendBSON`` (src/mongo/db/catalog/
collection_options.cpp): capped, size, max, autoIndexId, temp, recordPreImages,
storageEngine, indexOptionDefaults, validator, validationLevel,
validationAction, collation, clusteredIndex, viewOn, pipeline, timeseries.
A capped ``size`` is rounded up to a multiple of 256 (``adjustCappedSize``);
numbers are Int32 when they fit (``appendNumber``). A non-simple collation is
completed with ICU's defaults as the server does (the sandbox still compares
strings bytewise). Time-series and clustered collections are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson.int64 import Int64

from backupflows.sandbox.errors import BAD_VALUE, INVALID_OPTIONS, CommandError

COMMAND_NOT_SUPPORTED = 115
_ORDER = ("capped", "size", "max", "autoIndexId", "temp", "recordPreImages", "storageEngine",
          "indexOptionDefaults", "validator", "validationLevel", "validationAction",
          "collation", "viewOn", "pipeline")
_GENERIC = {"writeConcern", "lsid", "txnNumber", "$db", "$clusterTime", "$readPreference",
            "comment", "maxTimeMS", "autocommit", "startTransaction", "readConcern",
            "apiVersion", "apiStrict", "apiDeprecationErrors", "idIndex",
            "changeStreamPreAndPostImages", "expireAfterSeconds", "encryptedFields"}
_LEVELS = ("off", "strict", "moderate")
_ACTIONS = ("error", "warn", "errorAndLog")
_COLLATION_DEFAULTS = (("caseLevel", False), ("caseFirst", "off"), ("strength", 3),
                       ("numericOrdering", False), ("alternate", "non-ignorable"),
                       ("maxVariable", "punct"), ("normalization", False),
                       ("backwards", False), ("version", "57.1"))


def _number(n: int) -> Any:
    return n if -(1 << 30) < n < (1 << 30) else Int64(n)


def _capped(options: Mapping, out: dict) -> None:
    size = options.get("size")
    if size is None or isinstance(size, bool) or not isinstance(size, int | float):
        raise CommandError(INVALID_OPTIONS, "the 'size' field is required when 'capped' is true")
    if size < 0:
        raise CommandError(BAD_VALUE, "size has to be >= 0")
    out["capped"] = True
    out["size"] = _number((int(size) + 0xFF) & ~0xFF)
    max_docs = options.get("max")
    if isinstance(max_docs, int | float) and not isinstance(max_docs, bool) and max_docs:
        if max_docs >= 1 << 31:
            raise CommandError(BAD_VALUE, "max in a capped collection has to be < 2^31 or not set")
        out["max"] = _number(int(max_docs) if max_docs > 0 else 0x7FFFFFFF)


def collation_spec(collation: Any) -> dict | None:
    """The full collation the server stores (None for the simple collation)."""
    if not isinstance(collation, Mapping) or not collation:
        raise CommandError(BAD_VALUE, "'collation' has to be a non-empty document.")
    locale = collation.get("locale")
    if not isinstance(locale, str):
        raise CommandError(BAD_VALUE, "Missing required field: locale", )
    if locale == "simple":
        return None
    spec = {"locale": locale}
    for name, default in _COLLATION_DEFAULTS:
        spec[name] = collation.get(name, default)
    return spec


def _check_strings(options: Mapping) -> None:
    level = options.get("validationLevel")
    if level is not None and level not in _LEVELS:
        raise CommandError(BAD_VALUE, f"Enumeration value '{level}' for field "
                           f"'validationLevel' is not a valid value.")
    action = options.get("validationAction")
    if action is not None and action not in _ACTIONS:
        raise CommandError(BAD_VALUE, f"Enumeration value '{action}' for field "
                           f"'validationAction' is not a valid value.")


def normalize(options: Mapping) -> dict:
    """Validate the options of ``create`` (the command minus its name)."""
    for refused in ("timeseries", "clusteredIndex"):
        if options.get(refused) is not None:
            raise CommandError(COMMAND_NOT_SUPPORTED,
                               f"the sandbox does not support '{refused}' collections",
                               "CommandNotSupported")
    for field in options:
        if field not in _ORDER and field not in _GENERIC:
            raise CommandError(40415, f"BSON field 'create.{field}' is an unknown field.",
                               "Location40415")
    _check_strings(options)
    out: dict = {}
    if options.get("capped"):
        _capped(options, out)
    for field in _ORDER[3:]:
        value = options.get(field)
        if value is None or (field in ("temp", "recordPreImages") and not value):
            continue
        if field == "collation":
            value = collation_spec(value)
            if value is None:
                continue
        out[field] = value
    if "pipeline" in out and "viewOn" not in out:
        raise CommandError(BAD_VALUE, "'pipeline' cannot be specified without 'viewOn'")
    return out
