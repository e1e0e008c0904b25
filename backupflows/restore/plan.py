"""What a restore delivers: one ``Item`` per selected namespace, under its
target name, with its metadata, its documents as a stream, and the count and
content hash the stream must have.

Items come from a snapshot manifest (documents read from the blockstore) or
from a rolled-forward head (point in time). Both sides describe namespaces
the way the head does: a time series is a view-like entry ``db.X`` plus its
buckets collection ``db.system.buckets.X``; an item of a time series carries
the buckets' documents, as mongodump writes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from backupflows.contenthash import ContentHash
from backupflows.head.catalog import COLLECTION, TIMESERIES, VIEW
from backupflows.head.export import HeadReader
from backupflows.mongodump import CollectionMeta, DumpReader
from backupflows.mongodump.fromhead import decode as _decode
from backupflows.mongodump.fromhead import timeseries_options
from backupflows.mongodump.metadata import BUCKETS_PREFIX
from backupflows.restore.select import Selection
from backupflows.storage import layers as L
from backupflows.storage import snapshot as snap
from backupflows.storage.blockstore import BlockStore
from backupflows.storage.manifest import FULL, BlockEntry, CollectionEntry, Manifest

Documents = Callable[[], Iterator[bytes]]
Runs = Callable[[], Iterator[L.Run]]


@dataclass
class Namespace:
    """A namespace as the head (and a manifest) describes it."""

    db: str
    name: str
    type: str
    uuid: bytes | None
    options: bytes
    indexes: list[bytes]
    count: int
    hash: str
    documents: Documents
    blocks: Documents | None = None  # whole-document chunks, when stored as one full layer
    sums: list[BlockEntry] | None = None  # those blocks with their recorded content sums
    runs: Runs | None = None  # the documents as runs (``layers.merge_runs``)


@dataclass
class Item:
    """One namespace to deliver: target metadata, documents, what they must hash to."""

    source: str                 # source namespace (before renaming)
    meta: CollectionMeta        # target db/name, type, options, indexes, uuid
    documents: Documents        # raw documents in _id order (none for a view)
    expected: ContentHash | None  # None for a view
    blocks: Documents | None = None  # the same documents as whole-document chunks
    sums: list[BlockEntry] | None = None  # what ``blocks`` yields, block by block, with
    #                                       its recorded count and content sum
    runs: Runs | None = None  # the same documents as runs: untouched blocks whole

    @property
    def ns(self) -> str:
        return self.meta.namespace



def _none() -> Iterator[bytes]:
    return iter(())


def plan(namespaces: list[Namespace], selection: Selection) -> list[Item]:
    """The items of ``namespaces`` that ``selection`` keeps, renamed, in (db, name) order."""
    by_name = {(n.db, n.name): n for n in namespaces}
    timeseries = {(n.db, n.name) for n in namespaces if n.type == TIMESERIES}
    items: list[Item] = []
    for n in namespaces:
        if n.name.startswith(BUCKETS_PREFIX) and \
                (n.db, n.name[len(BUCKETS_PREFIX):]) in timeseries:
            continue  # delivered with its time series
        if not selection.matches_ns(f"{n.db}.{n.name}"):
            continue
        db, name = selection.rename(n.db, n.name)
        items.append(_item(n, db, name, by_name.get((n.db, BUCKETS_PREFIX + n.name))))
    _check_unique(items)
    return sorted(items, key=lambda i: (i.meta.db, i.meta.name))


def _item(n: Namespace, db: str, name: str, buckets: Namespace | None) -> Item:
    indexes = [_decode(s) for s in n.indexes]
    source = f"{n.db}.{n.name}"
    if n.type == VIEW:
        return Item(source, CollectionMeta(db, name, VIEW, _decode(n.options), []), _none, None)
    if n.type == TIMESERIES:
        options = timeseries_options(None if buckets is None else buckets.options)
        meta = CollectionMeta(db, name, TIMESERIES, options, indexes)
        if buckets is None:
            return Item(source, meta, _none, ContentHash())
        return Item(source, meta, buckets.documents,
                    ContentHash.from_hex(buckets.count, buckets.hash), buckets.blocks,
                    buckets.sums, buckets.runs)
    assert n.type == COLLECTION, n.type
    meta = CollectionMeta(db, name, COLLECTION, _decode(n.options), indexes, n.uuid)
    return Item(source, meta, n.documents, ContentHash.from_hex(n.count, n.hash), n.blocks,
                n.sums, n.runs)


def _check_unique(items: list[Item]) -> None:
    seen: dict[str, str] = {}
    for item in items:
        if item.ns in seen:
            from backupflows.errors import RestoreError

            raise RestoreError(f"renaming sends both {seen[item.ns]} and {item.source} to "
                               f"{item.ns}")
        seen[item.ns] = item.source


# -- where namespaces come from ----------------------------------------------------------

def from_manifest(store: BlockStore, m: Manifest, prefetch: int = 4) -> list[Namespace]:
    """The namespaces of a snapshot; documents are read (and block hashes
    checked) from ``store`` when an item's stream is consumed."""
    return [_from_entry(store, c, prefetch) for c in m.collections]


def _from_entry(store: BlockStore, c: CollectionEntry, prefetch: int) -> Namespace:
    def documents() -> Iterator[bytes]:
        return snap.read_entry(store, c, prefetch)

    def blocks() -> Iterator[bytes]:  # a full layer's blocks are documents back to back
        return store.iter_blocks([b.id for b in c.layers[0].blocks], prefetch)

    def runs() -> Iterator[L.Run]:
        return L.merge_runs(c.layers, lambda ids: store.iter_blocks(ids, prefetch))

    single = c.holds_documents and len(c.layers) == 1 and c.layers[0].kind == FULL
    return Namespace(c.db, c.name, c.type, c.uuid, c.options, c.indexes, c.count, c.hash,
                     documents if c.holds_documents else _none, blocks if single else None,
                     c.block_sums() if single else None,
                     runs if c.holds_documents and not single and has_sums(c) else None)


def has_sums(c: CollectionEntry) -> bool:
    """Whether some base block of ``c`` records its content sum (format 2)."""
    return bool(c.layers) and any(b.sum is not None for b in c.layers[0].blocks)


def from_head(view: HeadReader) -> list[Namespace]:
    """The namespaces of a head (a rolled-forward one); counts and hashes are
    the head's incrementally kept ones."""
    out = []
    for c in view.collections():
        h = view.content_hash(c) if c.holds_documents else ContentHash()

        def documents(c: Any = c) -> Iterator[bytes]:
            return view.export(c)

        out.append(Namespace(c.db, c.name, c.type, c.uuid, c.options, view.indexes(c),
                             h.count, h.hexdigest(), documents if c.holds_documents else _none))
    return out


def plan_dump(reader: DumpReader, recorded: dict[str, dict[str, Any]], selection: Selection
              ) -> list[Item]:
    """The items of a filesystem-store snapshot (a mongodump directory and the
    counts and hashes recorded beside it), selected and renamed."""
    items = []
    for ns in reader:
        if not selection.matches_ns(ns.namespace):
            continue
        meta = ns.meta or CollectionMeta(ns.db, ns.name)
        db, name = selection.rename(ns.db, ns.name)
        target = CollectionMeta(db, name, meta.type, meta.options, meta.indexes, meta.uuid)
        rec = recorded.get(ns.namespace, {})
        if meta.has_data and "count" not in rec:
            from backupflows.errors import RestoreError

            raise RestoreError(f"{ns.namespace}: no count and hash recorded for it")
        expected = ContentHash.from_hex(rec["count"], rec["hash"]) if meta.has_data else None
        items.append(Item(ns.namespace, target, ns.documents if meta.has_data else _none,
                          expected))
    _check_unique(items)
    return sorted(items, key=lambda i: (i.meta.db, i.meta.name))
