"""The seed of an upserted document: the equality conditions of the filter.

Follows pathsupport::extractEqualityMatches / extractFullEqualityMatches and
addEqualitiesToDoc (src/mongo/db/update/path_support.cpp): equalities are
``{path: value}`` (value not an operator document nor a regex), ``{path: {$eq:
v}}``, a one-element ``$in`` and the children of ``$and`` (and of a one-child
``$or``, which the canonicalizer folds); the same path twice, or a path and
its prefix, is NotSingleValueField (54).  They are set in byte order of their
paths (the server keeps them in a std::map), creating sub-documents.  For a
replacement only the immutable ``_id`` is extracted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson.regex import Regex

from backupflows.sandbox.errors import CommandError
from backupflows.sandbox.query_values import copy_value, is_doc

NOT_SINGLE_VALUE_FIELD = 54
NOT_EXACT_VALUE_FIELD = 111


def _equalities(filt: Mapping, out: dict[str, Any]) -> None:
    for key, value in filt.items():
        if key == "$and" and isinstance(value, list):
            for sub in value:
                if is_doc(sub):
                    _equalities(sub, out)
        elif key == "$or" and isinstance(value, list) and len(value) == 1 and is_doc(value[0]):
            _equalities(value[0], out)
        elif not key.startswith("$"):
            _path_equality(key, value, out)


def _path_equality(path: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Regex) or hasattr(value, "pattern") and not isinstance(value, str):
        return
    if is_doc(value) and value and next(iter(value)).startswith("$"):
        if "$eq" in value:
            _add(path, value["$eq"], out)
        elif len(value) == 1 and isinstance(value.get("$in"), list) and len(value["$in"]) == 1:
            item = value["$in"][0]
            if not isinstance(item, Regex):
                _add(path, item, out)
        return
    _add(path, value, out)


def _add(path: str, value: Any, out: dict[str, Any]) -> None:
    if "$" in path.split("."):
        return
    for other in out:
        if other == path:
            raise CommandError(NOT_SINGLE_VALUE_FIELD, "cannot infer query fields to set, "
                               f"path '{path}' is matched twice")
        if other.startswith(path + ".") or path.startswith(other + "."):
            longer, shorter = (other, path) if len(other) > len(path) else (path, other)
            raise CommandError(NOT_SINGLE_VALUE_FIELD, "cannot infer query fields to set, "
                               f"both paths '{longer}' and '{shorter}' are matched")
    out[path] = value


def _set_at_path(doc: dict, parts: list[str], value: Any) -> None:
    current = doc
    for part in parts[:-1]:
        nxt = current.get(part)
        if not is_doc(nxt):
            nxt = {}
            current[part] = nxt
        current = nxt
    current[parts[-1]] = copy_value(value)


def seed_document(filt: Mapping, only_id: bool = False) -> dict:
    """The pre-image an upsert applies its update to."""
    found: dict[str, Any] = {}
    _equalities(filt, found)
    if only_id:
        for path in found:
            if path.startswith("_id."):
                raise CommandError(NOT_EXACT_VALUE_FIELD, "field at '_id' must be exactly "
                                   f"specified, field at sub-path '{path}'found")
        found = {p: v for p, v in found.items() if p == "_id"}
    doc: dict = {}
    for path in sorted(found, key=lambda p: p.encode()):
        _set_at_path(doc, path.split("."), found[path])
    return doc
