"""TEMPORARY stand-in for engineer B's update engine (backupflows/sandbox/update.py).

Installed by ``ensure_update_engine()`` only while the real module does not
exist yet; it knows replacements and top-level ``$set``/``$inc``/``$unset``,
enough to exercise the server's write paths. Remove once update.py lands.
"""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass


@dataclass
class UpdateOutcome:
    new_doc: dict
    oplog_o: dict | None
    is_replacement: bool


def _apply_update(doc, update, *, array_filters=None, upsert_insert=False):
    if not any(k.startswith("$") for k in update):
        new = {"_id": update.get("_id", doc["_id"]),
               **{k: v for k, v in update.items() if k != "_id"}}
        return UpdateOutcome(new, None if new == doc else new, True)
    new, diff = dict(doc), {}
    for field in update.get("$unset", {}):
        if field in new:
            del new[field]
            diff.setdefault("d", {})[field] = False
    for op in ("$set", "$inc"):
        for field, value in update.get(op, {}).items():
            value = new.get(field, 0) + value if op == "$inc" else value
            if field in new and new[field] == value:
                continue
            diff.setdefault("u" if field in doc else "i", {})[field] = value
            new[field] = value
    return UpdateOutcome(new, {"$v": 2, "diff": diff} if diff else None, False)


def _upsert_document(filter_, update, *, array_filters=None):
    base = {k: v for k, v in filter_.items() if not k.startswith("$")
            and not isinstance(v, dict)}
    return _apply_update(base, update).new_doc if any(k.startswith("$") for k in update) \
        else {**({"_id": base["_id"]} if "_id" in base else {}), **update}


def ensure_update_engine() -> None:
    try:
        importlib.import_module("backupflows.sandbox.update")
    except ImportError:
        module = types.ModuleType("backupflows.sandbox.update")
        module.UpdateOutcome = UpdateOutcome
        module.apply_update = _apply_update
        module.upsert_document = _upsert_document
        sys.modules["backupflows.sandbox.update"] = module
