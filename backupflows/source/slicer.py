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

Documents are never decoded: the cursor hands back ``RawBSONDocument``s,
their bytes are concatenated in chunks and the slicer only walks length
prefixes. Memory is one server batch (at most 16 MB), one chunk and one slice.

Retries: a failed ``getMore`` (dropped connection, killed cursor, election)
reopens the cursor after the last document already consumed, with bounded
exponential backoff (``client.Backoff``); no document is lost or repeated.
A collection dropped or renamed while it is read raises ``CollectionGone``:
the oplog carries the drop/rename, and validation's compare finds anything a
rename left unread.
"""

from __future__ import annotations

import math
import struct
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
from backupflows.source.rawdocs import spans, split
from backupflows.storage import container

SLICE_KIND = b"SLCE"
_GONE_CODES = {26, 175, 237}   # NamespaceNotFound, QueryPlanKilled, CursorKilled
ID_HINT = [("_id", 1)]
_LEN = struct.Struct("<i").unpack_from
CHUNK_BYTES = 4 * 1024 * 1024


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
    builder = _SliceBuilder(slice_bytes)
    for batch in raw_batches(client, ns, lo, hi, resume_after, backoff=backoff):
        yield from builder.add(batch)
    tail = builder.flush()
    if tail is not None:
        yield tail


def iter_docs(client: MongoClient, ns: str, lo: bytes | None = None, hi: bytes | None = None,
              resume_after: bytes | None = None, *, projection: dict | None = None,
              backoff: Backoff = DEFAULT_BACKOFF) -> Iterator[bytes]:
    """Every raw document of ``[lo, hi)`` after ``resume_after``, in ``_id`` order."""
    for batch in raw_batches(client, ns, lo, hi, resume_after, projection=projection,
                             backoff=backoff):
        yield from split(batch, f"batch of {ns}")


def raw_batches(client: MongoClient, ns: str, lo: bytes | None, hi: bytes | None,
                resume_after: bytes | None = None, *, projection: dict | None = None,
                backoff: Backoff = DEFAULT_BACKOFF) -> Iterator[bytes]:
    """Chunks (concatenated raw documents) of ``[lo, hi)`` after
    ``resume_after``, in ``_id`` order. A transient failure reopens the
    cursor after the last document of the last chunk handed out (the
    consumer has taken it whole by the time it asks for the next)."""
    start = resume_after if resume_after is not None else lo
    skip = id_key(resume_after) if resume_after is not None else None
    budget = RetryBudget(backoff)
    while True:
        last = None
        try:
            for batch in _open(client, ns, start, hi, projection):
                budget.progressed()
                if skip is not None and batch:
                    batch, skip = _drop_first_if(batch, skip), None
                if batch:
                    last = _last_doc(batch, ns)
                    yield batch
            return
        except OperationFailure as exc:
            if exc.code in _GONE_CODES:
                raise CollectionGone(f"{ns} was dropped or renamed while it was read "
                                     f"({exc.code})") from None
            budget.wait_or_raise(exc, f"reading {ns}")
        except PyMongoError as exc:
            budget.wait_or_raise(exc, f"reading {ns}")
        if last is not None:
            start, skip = raw_id(last), id_key(last)


def _drop_first_if(batch: bytes, key: bytes) -> bytes:
    """``batch`` without its first document if that document's key is ``key``."""
    end = _LEN(batch, 0)[0]
    return batch[end:] if id_key(batch[:end]) == key else batch


def _last_doc(batch: bytes, ns: str) -> bytes:
    span = (0, 0)
    for span in spans(batch, f"batch of {ns}"):  # noqa: B007 - we want the last one
        pass
    return batch[span[0]:span[1]]


def _open(client: MongoClient, ns: str, lo: bytes | None, hi: bytes | None,
          projection: dict | None = None, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The documents of ``[lo, hi)`` in ``_id`` order, concatenated in
    chunks of about ``chunk_bytes``. A plain cursor of ``RawBSONDocument``
    measured faster than ``find_raw_batches`` (which re-assembles every
    server batch); either way nothing is decoded."""
    db, coll = split_coll(ns)
    collection = client.get_database(db, codec_options=RAW)[coll]
    cursor = collection.find({}, projection).hint(ID_HINT)
    if lo is not None:
        cursor = cursor.min([("_id", bound_value(lo))])
    if hi is not None:
        cursor = cursor.max([("_id", bound_value(hi))])
    with cursor:
        buf = bytearray()
        for doc in cursor:
            buf += doc.raw
            if len(buf) >= chunk_bytes:
                yield bytes(buf)
                buf = bytearray()
        if buf:
            yield bytes(buf)


class _SliceBuilder:
    """Cuts server batches into slices of at most ``limit`` bytes. Documents
    are located as ``(batch, start, end)`` and copied once, span by span."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.count = 0
        self.first: tuple[bytes, int, int] | None = None
        self.last: tuple[bytes, int, int] | None = None   # last document consumed

    @property
    def last_raw(self) -> bytes | None:
        if self.last is None:
            return None
        batch, start, end = self.last
        return batch[start:end]

    def add(self, batch: bytes) -> Iterator[Slice]:
        """Consume one batch, yielding every slice it completes."""
        pending: int | None = None   # offset of the documents not yet in buf
        for start, end in spans(batch, "find batch"):
            waiting = 0 if pending is None else start - pending
            if self.count and len(self.buf) + waiting + end - start > self.limit:
                if pending is not None:
                    self.buf += batch[pending:start]
                    pending = None
                yield self._emit()
            if pending is None:
                pending = start
            if self.count == 0:
                self.first = (batch, start, end)
            self.count += 1
            self.last = (batch, start, end)
        if pending is not None:
            self.buf += batch[pending:]

    def _emit(self) -> Slice:
        assert self.first is not None and self.last is not None
        b, s, e = self.first
        first = b[s:e]
        last = self.last_raw
        assert last is not None
        out = Slice(bytes(self.buf), self.count, len(self.buf), id_key(first), id_key(last),
                    raw_id(last))
        self.buf, self.count, self.first = bytearray(), 0, None
        return out

    def flush(self) -> Slice | None:
        return self._emit() if self.count else None


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
