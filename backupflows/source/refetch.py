"""Refetching documents by ``_id`` (validation of an initial sync).

``fetch_by_ids`` takes raw ``{_id: v}`` documents (as ``bsonorder.raw_id``
makes them) and queries ``{_id: {$in: [...]}}`` in batches. The filter is
assembled from the raw ``_id`` values, never decoded, so every BSON type
goes to the server exactly as stored. Equality is the server's: numbers
match across types (``1``, ``1L`` and ``1.0`` are one ``_id``), and answers
are matched to requests by ``bsonorder`` key.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from backupflows.bsonorder import find_field, id_key, skip_value
from backupflows.source.client import DEFAULT_BACKOFF, RAW, Backoff, RetryBudget
from backupflows.source.rawdocs import spans
from backupflows.source.slicer import ID_HINT, split_coll

_i32 = struct.Struct("<i")
DEFAULT_BATCH = 500


def _id_value(raw: bytes) -> tuple[int, bytes]:
    """(BSON type, value bytes) of the ``_id`` of a raw document."""
    found = find_field(raw, b"_id")
    if found is None:
        raise ValueError("a refetch id must be a {_id: value} document")
    t, pos = found
    return t, bytes(raw[pos:skip_value(t, raw, pos)])


def _doc(elements: bytes) -> bytes:
    return _i32.pack(len(elements) + 5) + elements + b"\x00"


def in_filter(raw_ids: list[bytes]) -> RawBSONDocument:
    """``{_id: {$in: [...]}}`` built from raw ``_id`` values."""
    items = bytearray()
    for i, raw in enumerate(raw_ids):
        t, value = _id_value(raw)
        items += bytes((t,)) + str(i).encode() + b"\x00" + value
    array = _doc(bytes(items))
    cond = _doc(b"\x04$in\x00" + array)
    return RawBSONDocument(_doc(b"\x03_id\x00" + cond))


def fetch_by_ids(client: MongoClient, ns: str, raw_ids: Iterable[bytes],
                 batch_size: int = DEFAULT_BATCH, *, backoff: Backoff = DEFAULT_BACKOFF,
                 ) -> Iterator[tuple[bytes, bytes | None]]:
    """``(raw_id, raw_doc or None)`` for every requested id, in request order
    (``None``: no such document at the source now). Transient failures are
    retried per batch with ``backoff``."""
    batch: list[bytes] = []
    for raw in raw_ids:
        batch.append(bytes(raw))
        if len(batch) >= batch_size:
            yield from _fetch_batch(client, ns, batch, backoff)
            batch = []
    if batch:
        yield from _fetch_batch(client, ns, batch, backoff)


def _fetch_batch(client: MongoClient, ns: str, raw_ids: list[bytes],
                 backoff: Backoff = DEFAULT_BACKOFF) -> Iterator[tuple[bytes, bytes | None]]:
    """One ``$in`` query; a transient failure re-runs it (it is idempotent)."""
    db, coll = split_coll(ns)
    collection = client.get_database(db, codec_options=RAW)[coll]
    budget = RetryBudget(backoff)
    while True:
        found: dict[bytes, bytes] = {}
        try:
            for data in collection.find_raw_batches(in_filter(raw_ids)).hint(ID_HINT):
                for start, end in spans(data, "refetch batch"):
                    doc = data[start:end]
                    found[id_key(doc)] = doc
            break
        except PyMongoError as exc:
            budget.wait_or_raise(exc, f"refetching {len(raw_ids)} documents of {ns}")
    for raw in raw_ids:
        yield raw, found.get(id_key(raw))
