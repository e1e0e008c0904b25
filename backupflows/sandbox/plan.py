"""Query planning: which records a filter needs, in which order.

Predicates on ``_id`` (``$eq``, ``$in``, ``$gt``/``$gte``/``$lt``/``$lte``,
or a plain value) become a range or a set of exact keys over the ``_id``
index, and predicates on ``ts`` of the oplog a range over its record ids, so
slicing a collection by ``_id`` ranges and tailing the oplog from a timestamp
are range lookups that never decode a document. Comparison bounds are
type-bracketed as the server does (``{$gt: 5}`` only matches numbers), except
for MinKey/MaxKey which bound every type. Whatever else the filter says is
the *residual*, checked by ``query.matches`` on decoded documents.

Scan order: ``{$natural: ±1}`` (sort or hint) walks record ids, ``{_id: ±1}``
the ``_id`` index; without a sort, a filter with ``_id`` bounds uses the
``_id`` index (as the server's planner would) and anything else walks natural
order. Any other sort is done in memory by ``query.sort_docs``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.regex import Regex
from bson.timestamp import Timestamp

from backupflows.bsonorder import id_key, value_key
from backupflows.sandbox.cursors import Bounds, ScanCursor
from backupflows.sandbox.errors import BAD_VALUE, CommandError
from backupflows.sandbox.oplog import ts_value
from backupflows.sandbox.storage import Collection, decode

_RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")
_FAST_OPS = {"$eq", "$in", *_RANGE_OPS}


def _is_operator_doc(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(
        isinstance(k, str) and k.startswith("$") for k in value)


def _plain(value: Any) -> bool:
    """A value whose equality/ordering we can decide on keys alone."""
    return not isinstance(value, list | re.Pattern | Regex)


def _intersect(a: Bounds, b: Bounds) -> Bounds:
    lo, lo_incl = a.lo, a.inclusive[0]
    if b.lo is not None and (lo is None or b.lo > lo or (b.lo == lo and not b.inclusive[0])):
        lo, lo_incl = b.lo, b.inclusive[0]
    hi, hi_incl = a.hi, a.inclusive[1]
    if b.hi is not None and (hi is None or b.hi < hi or (b.hi == hi and not b.inclusive[1])):
        hi, hi_incl = b.hi, b.inclusive[1]
    return Bounds(lo, hi, (lo_incl, hi_incl))


def _key_interval(op: str, value: Any) -> Bounds:
    key = value_key(value)
    unbounded = isinstance(value, MinKey | MaxKey)
    start = None if unbounded else bytes((key[0],))
    end = None if unbounded else bytes((key[0] + 1,))
    if op == "$gt":
        return Bounds(key, end, (False, False))
    if op == "$gte":
        return Bounds(key, end, (True, False))
    if op == "$lt":
        return Bounds(start, key, (True, False))
    return Bounds(start, key, (True, True))  # $lte


def id_bounds(cond: Any) -> Bounds | None:
    """Key bounds for an ``_id`` condition, or None if it needs the matcher."""
    if not _is_operator_doc(cond):
        return Bounds(points=[value_key(cond)]) if _plain(cond) else None
    if any(op not in _FAST_OPS for op in cond):
        return None
    bounds, points = Bounds(), None
    for op, value in cond.items():
        if op == "$in":
            if not isinstance(value, list) or not all(_plain(v) for v in value):
                return None
            keys = {value_key(v) for v in value}
            points = keys if points is None else points & keys
        elif not _plain(value):
            return None
        elif op == "$eq":
            points = {value_key(value)} if points is None else points & {value_key(value)}
        else:
            bounds = _intersect(bounds, _key_interval(op, value))
    if points is not None:
        return Bounds(points=sorted(k for k in points if bounds.contains(k)))
    return bounds


def ts_bounds(cond: Any) -> Bounds | None:
    """Record-id bounds of the oplog for a ``ts`` condition on Timestamps."""
    if isinstance(cond, Timestamp):
        cond = {"$eq": cond}
    if not _is_operator_doc(cond) or any(op not in ("$eq", *_RANGE_OPS) for op in cond):
        return None
    bounds = Bounds()
    for op, value in cond.items():
        if not isinstance(value, Timestamp):
            return None
        rid = ts_value(value.time, value.inc)
        part = {"$eq": Bounds(rid, rid), "$gt": Bounds(rid, None, (False, True)),
                "$gte": Bounds(rid, None), "$lt": Bounds(None, rid, (True, False)),
                "$lte": Bounds(None, rid)}[op]
        bounds = _intersect(bounds, part)
    return bounds


def split(filter_: Mapping | None, coll: Collection) -> tuple[Bounds | None, str, dict]:
    """(bounds, "id" | "ts" | "", residual filter)."""
    residual = dict(filter_ or {})
    if coll.has_id_index and "_id" in residual:
        bounds = id_bounds(residual["_id"])
        if bounds is not None:
            del residual["_id"]
            return bounds, "id", residual
    if not coll.has_id_index and "ts" in residual:
        bounds = ts_bounds(residual["ts"])
        if bounds is not None:
            del residual["ts"]
            return bounds, "ts", residual
    return None, "", residual


def min_max_bounds(coll: Collection, hint: Any, min_: Any, max_: Any, bounds: Bounds | None,
                   kind: str, residual: dict) -> tuple[Bounds, str, dict]:
    """Index bounds of find's ``min`` (inclusive) and ``max`` (exclusive).

    As on the server they bound the hinted index without type bracketing, so
    ``min({_id: MinKey}).max({_id: MaxKey})`` covers ``_id`` values of every
    type; only the ``_id`` index exists here.
    """
    if hint is None:
        raise CommandError(51173, "When using min()/max() a hint of which index to use"
                           " must be provided", "Location51173")
    if hint not in ("_id_", {"_id": 1}) or not coll.has_id_index:
        raise CommandError(BAD_VALUE, "the sandbox supports min()/max() on the _id index only")
    keys = []
    for name, spec in (("min", min_), ("max", max_)):
        if spec is None:
            keys.append(None)
            continue
        if not isinstance(spec, Mapping) or list(spec) != ["_id"]:
            raise CommandError(51174, f"The index key pattern of {name}() must match the hint"
                               " {_id: 1}", "Location51174")
        keys.append(value_key(spec["_id"]))
    part = Bounds(keys[0], keys[1], (True, False))
    if kind == "id" and bounds is not None:
        if bounds.points is not None:
            return Bounds(points=[k for k in bounds.points if part.contains(k)]), "id", residual
        return _intersect(bounds, part), "id", residual
    return part, "id", residual


def _direction(spec: Any, field: str) -> int | None:
    if isinstance(spec, Mapping) and list(spec) == [field]:
        value = spec[field]
        if isinstance(value, int | float) and not isinstance(value, bool) and value in (1, -1):
            return int(value)
        raise CommandError(BAD_VALUE, f"$natural/{field} sort direction must be 1 or -1")
    return None


def scan_order(coll: Collection, sort: Mapping | None, hint: Any,
               kind: str) -> tuple[str, bool] | None:
    """("natural" | "id", reverse) or None when an in-memory sort is needed."""
    sort = sort or {}
    natural = _direction(sort, "$natural") if "$natural" in sort else None
    if natural is not None:
        return "natural", natural < 0
    if not sort:
        if isinstance(hint, Mapping) and "$natural" in hint:
            return "natural", _direction(hint, "$natural") < 0
        if kind == "id" or (hint in ("_id_", {"_id": 1}) and coll.has_id_index):
            return "id", False
        return "natural", False
    if coll.has_id_index and list(sort) == ["_id"]:
        return "id", _direction(sort, "_id") < 0
    return None


def make_scan(coll: Collection, order: tuple[str, bool], bounds: Bounds | None, kind: str,
              residual: dict) -> ScanCursor:
    """A cursor over ``coll`` in ``order`` restricted by the planned bounds."""
    from backupflows.sandbox.query import matches
    by_id = order[0] == "id"
    scan = ScanCursor(ns=coll.ns, coll=coll, by_id=by_id, reverse=order[1])
    if bounds is not None and kind == "id" and by_id:
        scan.bounds = bounds
    elif bounds is not None and kind == "id":
        scan.id_filter = lambda raw: bounds.contains(id_key(raw))
    elif bounds is not None:  # ts on the oplog
        scan.bounds = bounds
    if residual:
        scan.matcher = lambda doc: matches(doc, residual)
    return scan


def iter_matching(coll: Collection, filter_: Mapping | None,
                  reverse: bool = False) -> Iterator[tuple[int, bytes]]:
    """(record id, raw) of every matching document, ``_id``-planned."""
    bounds, kind, residual = split(filter_, coll)
    order = ("id" if kind == "id" else "natural", reverse)
    scan = make_scan(coll, order, bounds, kind, residual)
    if scan.bounds.empty:
        return
    for _pos, rid in list(scan._positions()):
        raw = coll.records.get(rid)
        if raw is not None and scan._accept(raw) is not None:
            yield rid, raw


def iter_docs(coll: Collection, filter_: Mapping | None) -> Iterator[dict]:
    for _rid, raw in iter_matching(coll, filter_):
        yield decode(raw)
