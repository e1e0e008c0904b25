"""Comparing the head with the source, collection by collection.

``scan_ids`` streams ``(key, raw_id, digest)`` for every document of a
source collection in ``_id`` order (a find hinted on ``{_id: 1}``, raw
batches, nothing decoded); ``collection_summary`` folds the same stream into
a count and a ``ContentHash``. ``diff_ids`` merge-joins two such sorted
streams (the head's and the source's) and yields what differs: memory does
not depend on the size of the collections.

The source keeps changing while it is read: a difference found on a live
source may be a write the head has not applied yet. Validation compares at a
point where the head has applied the oplog up to a known optime, refetches
the differing ``_id``s and applies them (see ``refetch``).
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass

from pymongo import MongoClient

from backupflows.bsonorder import id_key, raw_id
from backupflows.contenthash import ContentHash, doc_digest
from backupflows.source.prefetch import prefetched
from backupflows.source.slicer import iter_docs

ONLY_IN_HEAD, ONLY_IN_SOURCE, CHANGED = "only_in_head", "only_in_source", "changed"


@dataclass(frozen=True)
class DocRef:
    """One document seen by a comparison: its ``bsonorder`` key, its raw
    ``{_id: v}`` (for a refetch) and its content digest (``None``: unknown)."""

    key: bytes
    raw_id: bytes
    digest: int | None = None


@dataclass(frozen=True)
class Difference:
    side: str          # only_in_head | only_in_source | changed
    key: bytes
    raw_id: bytes


@dataclass(frozen=True)
class CollectionSummary:
    ns: str
    count: int
    content_hash: ContentHash

    @property
    def hexdigest(self) -> str:
        return self.content_hash.hexdigest()


def doc_ref(raw_doc: bytes, with_digest: bool = True) -> DocRef:
    """The ``DocRef`` of a raw document (the head side uses this too)."""
    return DocRef(id_key(raw_doc), raw_id(raw_doc), doc_digest(raw_doc) if with_digest else None)


def scan_docs(client: MongoClient, ns: str) -> Iterator[bytes]:
    """Every raw document of a source collection, in ``_id`` order (with the
    slicer's retries: a dropped connection resumes after the last _id)."""
    return iter_docs(client, ns)


def scan_ids(client: MongoClient, ns: str, with_digest: bool = True) -> Iterator[DocRef]:
    """``DocRef`` of every document of a source collection, in ``_id`` order
    (``with_digest=False`` reads only the ``_id``s: less to transfer)."""
    if with_digest:
        for raw in iter_docs(client, ns):
            yield doc_ref(raw)
        return
    for raw in iter_docs(client, ns, projection={"_id": 1}):
        yield DocRef(id_key(raw), raw_id(raw))


def collection_summary(client: MongoClient, ns: str) -> CollectionSummary:
    """Count and content hash of a source collection, in one streaming pass."""
    h = ContentHash()
    for raw in scan_docs(client, ns):
        h.add(raw)
    return CollectionSummary(ns, h.count, h)


RefLike = DocRef | tuple[bytes, bytes]


def diff_ids(head: Iterable[RefLike], source: Iterable[RefLike]) -> Iterator[Difference]:
    """Differences between two streams sorted by key (strictly ascending) of
    ``DocRef`` or ``(key, raw_id)`` pairs: ids only in one of them, and
    ``changed`` where both sides know a digest and the digests differ."""
    h_it, s_it = map(_as_ref, head), map(_as_ref, source)
    h, s = next(h_it, None), next(s_it, None)
    last_h = last_s = None
    while h is not None or s is not None:
        if h is not None and (s is None or h.key < s.key):
            yield Difference(ONLY_IN_HEAD, h.key, h.raw_id)
            last_h, h = _advance(h_it, h, last_h, "head")
        elif h is None or (s is not None and s.key < h.key):
            assert s is not None
            yield Difference(ONLY_IN_SOURCE, s.key, s.raw_id)
            last_s, s = _advance(s_it, s, last_s, "source")
        else:
            if h.digest is not None and s.digest is not None and h.digest != s.digest:
                yield Difference(CHANGED, s.key, s.raw_id)
            last_h, h = _advance(h_it, h, last_h, "head")
            last_s, s = _advance(s_it, s, last_s, "source")


def _as_ref(item: RefLike) -> DocRef:
    return item if isinstance(item, DocRef) else DocRef(item[0], item[1])


def _advance(it: Iterator[DocRef], current: DocRef, previous: bytes | None,
             side: str) -> tuple[bytes, DocRef | None]:
    if previous is not None and current.key <= previous:
        raise ValueError(f"diff_ids: the {side} stream is not sorted by _id")
    return current.key, next(it, None)


def source_ids(client: MongoClient, ns: str) -> Generator[bytes, None, None]:
    """The raw ``{_id: v}`` of every document of a source collection, in
    ``_id`` order, read ahead on a thread (``prefetch``): only ``_id``s are
    transferred, and the source serves the next batch while the caller
    compares."""
    return prefetched(iter_docs(client, ns, projection={"_id": 1}))


def diff_head(head: Iterable[tuple[bytes, bytes]], source: Iterable[bytes]
              ) -> Iterator[Difference]:
    """``diff_ids`` of the head's ``(key, raw document)`` pairs (``export_keyed``)
    and the source's raw ``{_id: v}`` documents (``source_ids``), both in ``_id``
    order: only ``_id`` sets are compared. Where the head document starts with
    the very ``_id`` element the source sent (documents keep ``_id`` first),
    the two are the same document and no key is computed; otherwise the
    source ``_id``'s key decides (numerically equal ``_id``s of other types
    match), and the head document's ``{_id}`` is cut out only when it differs."""
    h_it, s_it = iter(head), iter(source)
    h, s = next(h_it, None), next(s_it, None)
    last_h = last_s = b""
    while h is not None and s is not None:
        hk, doc = h
        if doc.startswith(s[4:-1], 4):  # the same _id element, first in the document
            last_h = last_s = _check(hk, last_h, "head")
            h, s = next(h_it, None), next(s_it, None)
            continue
        sk = id_key(s)
        if hk == sk:
            last_h, last_s = _check(hk, last_h, "head"), _check(sk, last_s, "source")
            h, s = next(h_it, None), next(s_it, None)
        elif hk < sk:
            yield Difference(ONLY_IN_HEAD, hk, raw_id(doc))
            last_h, h = _check(hk, last_h, "head"), next(h_it, None)
        else:
            yield Difference(ONLY_IN_SOURCE, sk, s)
            last_s, s = _check(sk, last_s, "source"), next(s_it, None)
    while h is not None:
        yield Difference(ONLY_IN_HEAD, h[0], raw_id(h[1]))
        last_h, h = _check(h[0], last_h, "head"), next(h_it, None)
    while s is not None:
        sk = id_key(s)
        yield Difference(ONLY_IN_SOURCE, sk, s)
        last_s, s = _check(sk, last_s, "source"), next(s_it, None)


def _check(key: bytes, previous: bytes, side: str) -> bytes:
    if key <= previous and previous:
        raise ValueError(f"diff_head: the {side} stream is not sorted by _id")
    return key


def split_diff(diffs: Iterable[Difference]) -> tuple[list[Difference], list[Difference],
                                                     list[Difference]]:
    """``(only_in_head, only_in_source, changed)`` lists (for small diffs)."""
    out: dict[str, list[Difference]] = {ONLY_IN_HEAD: [], ONLY_IN_SOURCE: [], CHANGED: []}
    for d in diffs:
        out[d.side].append(d)
    return out[ONLY_IN_HEAD], out[ONLY_IN_SOURCE], out[CHANGED]
