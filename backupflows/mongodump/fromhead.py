"""The mongodump metadata of a head's collections (``.metadata.json``), shared by
everything that writes a dump from a head: ``oplog replay``, the filesystem
snapshot store and restores."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import bson
from bson.codec_options import CodecOptions

from backupflows.head import rawdoc
from backupflows.head.catalog import COLLECTION, TIMESERIES, VIEW, Collection
from backupflows.head.export import HeadReader
from backupflows.mongodump.metadata import BUCKETS_PREFIX, CollectionMeta

_DECODE = CodecOptions(document_class=dict, tz_aware=False)
_TS_OPTIONS = (b"timeseries", b"expireAfterSeconds")  # what a time-series view dumps


def decode(raw: bytes) -> dict[str, Any]:
    """A catalog BSON value (options, index spec) as a plain dict."""
    return bson.decode(raw, _DECODE)


def timeseries_options(bucket_options: bytes | None) -> dict[str, Any]:
    """The options a time-series collection dumps, from its buckets' options."""
    if bucket_options is None:
        return {}
    return decode(rawdoc.build(e for n, e in rawdoc.elements_of(bucket_options)
                               if n in _TS_OPTIONS))


def collection_meta(view: HeadReader, c: Collection) -> tuple[CollectionMeta, Collection | None]:
    """``c``'s dump metadata and the collection holding its documents (the
    buckets of a time series; ``None`` for a view)."""
    indexes = [decode(s) for s in view.indexes(c)]
    if c.type == VIEW:
        return CollectionMeta(c.db, c.name, VIEW, decode(c.options), []), None
    if c.type == TIMESERIES:
        buckets = view.collection(c.db, BUCKETS_PREFIX + c.name)
        options = timeseries_options(None if buckets is None else buckets.options)
        return CollectionMeta(c.db, c.name, TIMESERIES, options, indexes), buckets
    assert c.type == COLLECTION
    return CollectionMeta(c.db, c.name, COLLECTION, decode(c.options), indexes, c.uuid), c


def dumped_collections(view: HeadReader) -> Iterator[Collection]:
    """The collections a dump lists: every one but the buckets of a time series
    (written with its time-series view)."""
    colls = view.collections()
    timeseries = {(c.db, c.name) for c in colls if c.type == TIMESERIES}
    for c in colls:
        if not (c.name.startswith(BUCKETS_PREFIX)
                and (c.db, c.name[len(BUCKETS_PREFIX):]) in timeseries):
            yield c
