"""The sandbox's query engine: filters, projections, sorts, aggregation, distinct.

Public API (called by the wire layer's find/count/distinct/aggregate):

    matches(doc, filter) -> bool
    match_details(doc, filter) -> (bool, elemMatchKey)   for the positional `$`
    project(doc, projection) -> dict
    sort_docs(docs, sort) -> list
    aggregate(docs, pipeline) -> list[dict]
    distinct(docs, key) -> list

Documents are dicts in BSON field order and are never mutated.  The rules
and the server sources they follow are described in the helper modules:
query_match (filters), query_project (projections, $addFields),
query_aggregate (stages, $group), query_expr (aggregation expressions).

Sorting (src/mongo/db/query/sort_key_generator.cpp): each sort key is the
value at the path, arrays contributing their smallest element for an
ascending key and their largest for a descending one; missing sorts as null
and an empty array below null.  The sort is stable.

distinct (src/mongo/db/commands/distinct.cpp): values at the path, array
values unwound one level, deduplicated with server equality (1 == 1.0) and
returned in server order (the server collects them in a BSONElementSet).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from backupflows.sandbox.errors import BAD_VALUE, CommandError
from backupflows.sandbox.query_aggregate import aggregate
from backupflows.sandbox.query_match import cached_filter, match_details, path_candidates
from backupflows.sandbox.query_project import project
from backupflows.sandbox.query_values import MISSING, is_doc, is_number, value_key

__all__ = ["matches", "match_details", "project", "sort_docs", "aggregate", "distinct"]

_EMPTY_ARRAY_KEY = b"\x02"  # below null (0x03), above MinKey (0x01)


def matches(doc: Mapping, filter: Mapping | None) -> bool:  # noqa: A002 - server name
    """Whether ``doc`` matches the query ``filter``."""
    if not filter:
        return True
    return cached_filter(filter)(doc, [None])


def _sort_spec(sort: Mapping) -> list[tuple[list[str], int]]:
    spec = []
    for path, direction in sort.items():
        if is_doc(direction) and "$meta" in direction:
            raise CommandError(BAD_VALUE, "$meta sort is not supported by the sandbox")
        if not is_number(direction) or float(str(direction)) not in (1.0, -1.0):
            raise CommandError(15975, "$sort key ordering must be 1 (for ascending) or -1 "
                               "(for descending)")
        spec.append((path.split("."), 1 if float(str(direction)) > 0 else -1))
    return spec


def _sort_key(doc: Mapping, parts: list[str], direction: int) -> bytes:
    keys: list[bytes] = []
    for value, _ in path_candidates(doc, parts):
        if isinstance(value, list):
            keys.extend(value_key(v) for v in value)
            if not value:
                keys.append(_EMPTY_ARRAY_KEY)
        else:
            keys.append(value_key(None if value is MISSING else value))
    if not keys:
        return value_key(None)
    return min(keys) if direction > 0 else max(keys)


def sort_docs(docs: Iterable[Mapping], sort: Mapping) -> list:
    """``docs`` ordered by the sort specification, stably."""
    docs = list(docs)
    spec = _sort_spec(sort)
    if not spec:
        return docs
    keyed = [([_sort_key(d, parts, direction) for parts, direction in spec], i, d)
             for i, d in enumerate(docs)]
    directions = [direction for _, direction in spec]

    def compare(a: tuple, b: tuple) -> int:
        for ka, kb, direction in zip(a[0], b[0], directions):
            if ka != kb:
                return direction * (-1 if ka < kb else 1)
        return a[1] - b[1]

    keyed.sort(key=functools.cmp_to_key(compare))
    return [d for _, _, d in keyed]


def distinct(docs: Iterable[Mapping], key: str) -> list:
    """The distinct values of ``key`` over ``docs``, in server order."""
    if not isinstance(key, str) or not key:
        raise CommandError(BAD_VALUE, "distinct key must be a non-empty string")
    parts = key.split(".")
    seen: dict[bytes, Any] = {}
    for doc in docs:
        for value, _ in path_candidates(doc, parts):
            if value is MISSING:
                continue
            for item in (value if isinstance(value, list) else [value]):
                seen.setdefault(value_key(item), item)
    return [seen[k] for k in sorted(seen)]
