"""A sparse roll-forward: only the documents the oplog touches go into the
temporary head.

``scan`` reads the entries to apply once and finds, per namespace, the
``_id`` keys of the documents they insert, update or delete (inside
``applyOps`` and transactions too), and the namespaces whose DDL can move or
remove documents wholesale (``drop``, ``renameCollection`` both sides,
``dropDatabase``, ``create``, ``convertToCapped``, ``emptycapped``, anything
unknown): those are loaded whole. Index and ``collMod`` commands only change
metadata, which the head keeps for every namespace.

After the Applier ran on that head, a namespace's documents at the point are
the snapshot's, with every touched key replaced by the head's version (or
removed when the head has none): ``layers.merge`` of the snapshot's layer
chain with those changes as the newest layer, streamed. Its expected count
and content hash are the manifest's, minus what was loaded, plus what the
head holds at the end (the head keeps both incrementally).

Memory grows with the number of touched documents (their keys), not with
the size of the snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from backupflows.bsonorder import OBJECTID, id_key
from backupflows.contenthash import ContentHash
from backupflows.head import rawdoc
from backupflows.head.catalog import Collection
from backupflows.head.store import HeadStore
from backupflows.oplog.crud import entry_key
from backupflows.oplog.entry import Entry, parse
from backupflows.restore.plan import Namespace, _none, has_sums
from backupflows.storage import layers as L
from backupflows.storage import snapshot as snap
from backupflows.storage.blockstore import BlockStore
from backupflows.storage.manifest import FULL, CollectionEntry

_METADATA_ONLY = frozenset((
    "createIndexes", "dropIndexes", "deleteIndexes", "dropIndex", "startIndexBuild",
    "commitIndexBuild", "abortIndexBuild", "collMod", "commitTransaction",
    "abortTransaction"))
_OID_KEY = bytes((OBJECTID,))


@dataclass
class Touched:
    """What the entries to apply touch."""

    keys: dict[str, set[bytes]] = field(default_factory=dict)  # ns -> _id keys
    whole: set[str] = field(default_factory=set)               # namespaces loaded whole
    whole_dbs: set[str] = field(default_factory=set)           # dropDatabase

    def is_whole(self, ns: str) -> bool:
        return ns in self.whole or ns.partition(".")[0] in self.whole_dbs


def scan(entries: Iterable[bytes]) -> Touched:
    t = Touched()
    for raw in entries:
        _classify(t, parse(raw))
    return t


def _classify(t: Touched, e: Entry) -> None:
    if e.op in ("i", "u", "d"):
        t.keys.setdefault(e.ns or "", set()).add(entry_key(e))
        return
    if e.op != "c":
        return
    o = e.o()
    name = rawdoc.first_name(o)
    command = name.decode() if name else ""
    if command == "applyOps":
        found = rawdoc.field(o, b"applyOps")
        if found is not None and found[0] == 0x04:
            for kind, op_raw in rawdoc.array_items(o[found[1]:found[2]]):
                if kind == 0x03:
                    _classify(t, parse(op_raw, outer=e))
        return
    if command in _METADATA_ONLY:
        return
    if command == "dropDatabase":
        t.whole_dbs.add(e.db)
        return
    value = rawdoc.value(o, name) if name else None
    if command == "renameCollection":
        t.whole.add(str(value))
        t.whole.add(str(rawdoc.value(o, b"to")))
    elif isinstance(value, str):
        t.whole.add(f"{e.db}.{value}")
    else:
        t.whole_dbs.add(e.db)  # an unknown command: play safe for its database


def doc_key(doc: bytes) -> bytes:
    """``id_key`` of a raw document, with the common leading-ObjectId fast path."""
    if doc[4] == 0x07 and doc.startswith(b"_id\x00", 5):
        return _OID_KEY + doc[9:21]
    return id_key(doc)


def touched_docs(docs: Iterable[bytes], keys: set[bytes]) -> Iterator[bytes]:
    """The documents of a stream whose keys are in ``keys``."""
    for doc in docs:
        if doc_key(doc) in keys:
            yield doc


def changes(head: HeadStore, c: Collection, keys: set[bytes]) -> Iterator[L.Change]:
    """``(key, document or None)`` of every touched key, in key order."""
    present = head.export_keyed(c)
    nxt = next(present, None)
    for k in sorted(keys):
        while nxt is not None and nxt[0] < k:  # not touched: cannot happen, skip safely
            nxt = next(present, None)
        if nxt is not None and nxt[0] == k:
            yield k, nxt[1]
            nxt = next(present, None)
        else:
            yield k, None


def merged_namespace(head: HeadStore, c: Collection, entry: CollectionEntry, store: BlockStore,
                     keys: set[bytes], loaded: ContentHash) -> Namespace:
    """``c`` (sparse in the head) at the point: the snapshot merged with the head."""
    now = head.content_hash(c)
    expected = ContentHash.from_hex(entry.count, entry.hash)
    expected.count += now.count - loaded.count
    expected.total = (expected.total + now.total - loaded.total) % (1 << 256)

    def documents() -> Iterator[bytes]:
        if not entry.layers:
            return (doc for _, doc in changes(head, c, keys) if doc is not None)
        return L.merge(entry.layers, lambda ids: store.iter_blocks(ids, 4),
                       changes(head, c, keys))

    blocks = None
    sums = None
    if not keys and len(entry.layers) == 1 and entry.layers[0].kind == FULL:
        ids = [b.id for b in entry.layers[0].blocks]
        sums = entry.block_sums()  # nothing of it is in the head: the snapshot's sums hold

        def blocks() -> Iterator[bytes]:
            return store.iter_blocks(ids, 4)

    runs = None
    if blocks is None and c.holds_documents and has_sums(entry):

        def runs() -> Iterator[L.Run]:  # untouched blocks whole, with their recorded sums
            return L.merge_runs(entry.layers, lambda ids: store.iter_blocks(ids, 4),
                                changes(head, c, keys))

    return Namespace(c.db, c.name, c.type, c.uuid, c.options, head.indexes(c),
                     expected.count, expected.hexdigest(),
                     documents if c.holds_documents else _none, blocks, sums, runs)


def load_sparse(head: HeadStore, store: BlockStore, c: CollectionEntry, keys: set[bytes],
                chunk: int = 5000) -> ContentHash:
    """Load the touched documents of ``c`` into ``head``; their count and hash."""
    loaded = ContentHash()
    if not keys:
        return loaded
    batch: list[bytes] = []
    for doc in touched_docs(snap.read_entry(store, c, 4), keys):
        loaded.add(doc)
        batch.append(doc)
        if len(batch) >= chunk:
            head.load_slice(c.db, c.name, batch)
            batch = []
    if batch:
        head.load_slice(c.db, c.name, batch)
    return loaded
