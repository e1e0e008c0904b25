"""Slices: a collection's existing documents read in ``_id`` order, in
batches of about ``slice_bytes`` of raw BSON, resumable after a crash.

Ranges and bounds are raw BSON documents ``{_id: value}`` (``None`` stands
for MinKey below and MaxKey above). Reads use INDEX BOUNDS on ``{_id: 1}``
(``find().hint({_id: 1}).min(lo).max(hi)``), never ``$gt``/``$lt``
filters: comparison filters are type-bracketed (``{$gt: 5}`` only matches
numbers), index bounds are not, so ``_id`` values of mixed types are each
read exactly once. ``min`` is inclusive and ``max`` exclusive, so adjacent
ranges partition the collection; a resume point is exclusive (its document,
if it still exists, was in the last stored slice and is skipped).

Documents are never decoded: the cursor hands back ``RawBSONDocument``s and
a slice is the join of their bytes. Memory is one server batch (at most
16 MB) plus one slice.

Retries: a failed ``getMore`` (dropped connection, killed cursor, election)
reopens the cursor after the last document already consumed, with bounded
exponential backoff (``client.Backoff``); no document is lost or repeated.
A collection dropped or renamed while it is read raises ``CollectionGone``:
the oplog carries the drop/rename, and validation's compare finds anything a
rename left unread.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import bson
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from backupflows.bsonorder import id_key, raw_id
from backupflows.errors import IntegrityError, SourceError
from backupflows.source.client import (
    DEFAULT_BACKOFF,
    LOSSLESS,
    RAW,
    Backoff,
    RetryBudget,
    source_call,
)
from backupflows.source.namespaces import NamespaceInfo
from backupflows.source.rawdocs import split
from backupflows.storage import container

SLICE_KIND = b"SLCE"
_GONE_CODES = {26, 175, 237}   # NamespaceNotFound, QueryPlanKilled, CursorKilled
ID_HINT = [("_id", 1)]


class CollectionGone(SourceError):
    """The collection was dropped or renamed while its range was read."""


@dataclass(frozen=True)
class IdRange:
    """``[lo, hi)`` over ``_id``: raw ``{_id: v}`` bounds, ``None`` unbounded."""

    lo: bytes | None = None
    hi: bytes | None = None


@dataclass(frozen=True)
class Slice:
    """Consecutive documents of one range, concatenated raw BSON."""

    docs_raw: bytes
    count: int
    nbytes: int
    first_key: bytes       # bsonorder key of the first _id
    last_key: bytes        # bsonorder key of the last _id
    last_id_raw: bytes     # {_id: last}: the resume point after this slice


def split_coll(ns: str) -> tuple[str, str]:
    db, dot, coll = ns.partition(".")
    if not db or not dot or not coll:
        raise ValueError(f"not a collection namespace: {ns!r}")
    return db, coll


# -- planning ------------------------------------------------------------------

def plan_ranges(client: MongoClient, info: NamespaceInfo, slice_bytes: int, max_ranges: int,
                *, slices_per_range: int = 4, oversample: int = 16) -> list[IdRange]:
    """Split a collection into at most ``max_ranges`` ranges of at least
    ``slices_per_range`` slices each, cut at ``_id`` quantiles of a
    ``$sample``. Small collections get one range; views none."""
    if info.type != "collection":
        return []
    want = min(max_ranges, math.ceil(info.size / max(1, slice_bytes * slices_per_range)))
    if want <= 1 or info.count < 2 * want:
        return [IdRange()]
    cuts = _cut_points(client, info.ns, want, min(info.count, want * oversample))
    bounds: list[bytes | None] = [None, *cuts, None]
    return [IdRange(lo, hi) for lo, hi in zip(bounds, bounds[1:])]


def _cut_points(client: MongoClient, ns: str, want: int, sample_size: int) -> list[bytes]:
    db, coll = split_coll(ns)
    pipeline = [{"$sample": {"size": sample_size}}, {"$project": {"_id": 1}}]
    with source_call(f"sampling {ns} for split points"):
        # allowDiskUse: a sample above 5% of a collection is a blocking random sort
        rows = list(client.get_database(db, codec_options=RAW)[coll].aggregate(
            pipeline, allowDiskUse=True))
    keyed = sorted({id_key(r.raw): raw_id(r.raw) for r in rows}.items())
    if len(keyed) < 2:
        return []
    picks = {keyed[i * len(keyed) // want] for i in range(1, want)}
    return [raw for _, raw in sorted(picks)]


# -- reading -------------------------------------------------------------------

def bound_value(bound: bytes) -> Any:
    """The ``_id`` value of a raw ``{_id: v}`` bound, decoded losslessly."""
    try:
        doc = bson.decode(bound, LOSSLESS)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad bound
        raise ValueError(f"bad _id bound: {exc}") from None
    if list(doc) != ["_id"]:
        raise ValueError(f"bad _id bound: expected {{_id: value}}, got fields {list(doc)}")
    return doc["_id"]


def read_range(client: MongoClient, ns: str, lo: bytes | None, hi: bytes | None,
               resume_after: bytes | None = None, slice_bytes: int = 10 * 1024 * 1024,
               *, backoff: Backoff = DEFAULT_BACKOFF) -> Iterator[Slice]:
    """Slices of ``[lo, hi)`` after ``resume_after`` (exclusive), in ``_id``
    order, each at most ``slice_bytes`` (a larger single document makes a
    slice of its own). The last slice ends the range."""
    if slice_bytes <= 0:
        raise ValueError("slice_bytes must be positive")
    parts: list[bytes | memoryview] = []
    size = 0
    for raw in _docs(client, ns, lo, hi, resume_after, None, backoff):
        if parts and size + len(raw) > slice_bytes:
            yield _slice(parts, size)
            parts, size = [], 0
        parts.append(raw)
        size += len(raw)
    if parts:
        yield _slice(parts, size)


def _slice(parts: list[bytes | memoryview], size: int) -> Slice:
    last = bytes(parts[-1])
    return Slice(b"".join(parts), len(parts), size, id_key(bytes(parts[0])), id_key(last),
                 raw_id(last))


def iter_docs(client: MongoClient, ns: str, lo: bytes | None = None, hi: bytes | None = None,
              resume_after: bytes | None = None, *, projection: dict | None = None,
              backoff: Backoff = DEFAULT_BACKOFF) -> Iterator[bytes]:
    """Every raw document of ``[lo, hi)`` after ``resume_after``, in ``_id``
    order. A transient failure reopens the cursor after the last document
    handed out, with ``backoff`` between attempts."""
    for raw in _docs(client, ns, lo, hi, resume_after, projection, backoff):
        yield bytes(raw)


def _docs(client: MongoClient, ns: str, lo: bytes | None, hi: bytes | None,
          resume_after: bytes | None, projection: dict | None,
          backoff: Backoff) -> Iterator[bytes | memoryview]:
    """``iter_docs`` without the copy: pymongo may hand out memoryviews of
    the server batch."""
    start = resume_after if resume_after is not None else lo
    skip = id_key(resume_after) if resume_after is not None else None
    budget = RetryBudget(backoff)
    last = None
    while True:
        try:
            for raw in _open(client, ns, start, hi, projection):
                if skip is not None:
                    drop, skip = id_key(bytes(raw)) == skip, None
                    if drop:
                        continue
                last = raw
                budget.failures = 0
                yield raw
            return
        except OperationFailure as exc:
            if exc.code in _GONE_CODES:
                raise CollectionGone(f"{ns} was dropped or renamed while it was read "
                                     f"({exc.code})") from None
            budget.wait_or_raise(exc, f"reading {ns}")
        except PyMongoError as exc:
            budget.wait_or_raise(exc, f"reading {ns}")
        if last is not None:
            start, skip = raw_id(bytes(last)), id_key(bytes(last))


def _open(client: MongoClient, ns: str, lo: bytes | None, hi: bytes | None,
          projection: dict | None = None) -> Iterator[bytes | memoryview]:
    """The raw documents of ``[lo, hi)`` in ``_id`` order (a plain cursor of
    ``RawBSONDocument``: nothing is decoded; it measured faster than
    ``find_raw_batches``, which re-assembles every server batch)."""
    db, coll = split_coll(ns)
    collection = client.get_database(db, codec_options=RAW)[coll]
    cursor = collection.find({}, projection).hint(ID_HINT)
    if lo is not None:
        cursor = cursor.min([("_id", bound_value(lo))])
    if hi is not None:
        cursor = cursor.max([("_id", bound_value(hi))])
    with cursor:
        for doc in cursor:
            yield doc.raw


# -- the stored form -----------------------------------------------------------

def encode_slice(s: Slice, ns: str, **extra: Any) -> bytes:
    """The slice as a stored object (``SLCE`` container, zstd payload)."""
    header = dict(extra, ns=ns, count=s.count, nbytes=s.nbytes, first_key=s.first_key.hex(),
                  last_key=s.last_key.hex(), last_id=s.last_id_raw.hex())
    return container.pack(SLICE_KIND, header, s.docs_raw)


def slice_header(data: bytes) -> dict[str, Any]:
    """The header of a stored slice (``ns``, ``count``, keys, ...)."""
    return container.unpack(data, kind=SLICE_KIND, what="slice")[0]


def decode_slice(data: bytes) -> Iterator[bytes]:
    """The raw documents of a stored slice, checked against its count."""
    header, payload = container.unpack(data, kind=SLICE_KIND, what="slice")
    n = 0
    for doc in split(payload, "slice"):
        n += 1
        yield doc
    if n != header.get("count"):
        raise IntegrityError(f"slice of {header.get('ns')}: {n} documents, header says "
                             f"{header.get('count')}")
