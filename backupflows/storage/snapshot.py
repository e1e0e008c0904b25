"""Taking a snapshot of a head into the blockstore, reading and verifying it.

``take(head, store, ...)`` reads the head in ONE read transaction
(``HeadStore.snapshot()``: SQLite WAL gives a consistent view while the
applier keeps writing) at its applied optime and, per collection:

- **full**: the documents in ``_id`` order, chunked into blocks;
- **incremental** (a usable parent manifest, same collection — same head
  ``cid``, generation not newer than the parent's mark): a delta layer of
  the documents upserted and deleted since the parent's mark, appended to the
  parent's chain (no layer when nothing changed);
- **synthetic full**: when the chain has ``full_every`` layers or its deltas
  exceed ``full_delta_percent`` of the base, the chain plus the new changes
  are merged into a new full layer without reading the collection from the
  head (unchanged base blocks are reused as they are).

The manifest lists every collection's whole chain, so a snapshot restores
alone. Every new block of a full layer records the additive content hash of
its documents: the sum of the digests the head stores with each document
when the layer is read from the head, computed from the block's bytes
(inline, then on helper processes) when it is merged from a chain; a
collection stored as one full layer whose
blocks all carry one must add up to the head's count and hash, or the
snapshot fails (``IntegrityError``): what a restore later trusts instead of
hashing every document was checked against the head here. Blocks are compressed, hashed and stored by a small thread pool while
the head is read (zstd, SHA-256 and file writes release the GIL); at most a
few blocks are in flight, so memory does not grow with the data.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from backupflows.contenthash import ContentHash
from backupflows.errors import IntegrityError, RestoreError
from backupflows.head.catalog import Collection
from backupflows.head.export import HeadReader
from backupflows.restore.hashpool import HashPool  # stdlib-only helpers, shared with restores
from backupflows.restore.hashworker import hash_documents
from backupflows.storage import layers as L
from backupflows.storage.blockstore import BlockRef, BlockStore, Prepared
from backupflows.storage.chunker import Chunk, ChunkParams, chunks
from backupflows.storage.manifest import DELTA, FULL, BlockEntry, CollectionEntry, Layer, Manifest

_MOD = 1 << 256
HASH_INLINE_BYTES = 16 << 20  # past this, a snapshot sums documents on helper processes

Progress = Callable[["TakeStats"], None]


@dataclass
class TakeOptions:
    params: ChunkParams = field(default_factory=ChunkParams)
    full_every: int = 8            # consolidate a chain of this many layers (0: never)
    full_delta_percent: int = 50   # ... or whose deltas exceed this % of the base
    force: str | None = None       # "full" or "synthetic" for every collection
    workers: int = 2
    in_flight: int = 8            # blocks hashed/compressed ahead, indexed per batch


@dataclass
class TakeStats:
    blocks_new: int = 0
    blocks_reused: int = 0
    bytes_stored: int = 0          # compressed bytes of the blocks this snapshot wrote
    bytes_logical: int = 0         # uncompressed bytes of every layer the snapshot uses
    docs: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    def account(self, ref: BlockRef) -> None:
        if ref.new:
            self.blocks_new += 1
            self.bytes_stored += ref.stored_size
        else:
            self.blocks_reused += 1


class LayerWriter:
    """Stores chunks as blocks for one snapshot, in a pipeline: worker threads
    hash and compress (``prepare``); the calling thread deduplicates a batch
    (one catalog transaction) and hands new blocks to upload threads, whose
    blocks it indexes as they finish. Blocks keep their order in the layer;
    at most ``in_flight`` blocks wait to be compressed."""

    def __init__(self, store: BlockStore, snapshot_id: int, opts: TakeOptions,
                 stats: TakeStats, progress: Progress | None) -> None:
        self.store, self.snapshot_id, self.opts = store, snapshot_id, opts
        self.stats, self.progress = stats, progress
        workers = max(1, opts.workers)
        self.cpu = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blocks")
        self.io = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="uploads")
        self.uploads: list[tuple[Prepared, Future[None]]] = []
        self.hasher: HashPool | None = None
        self._hashed = 0
        self._last_report = time.monotonic()

    def close(self) -> None:
        self.cpu.shutdown(wait=True)
        self.io.shutdown(wait=True)
        if self.hasher is not None:
            self.hasher.close()
            self.hasher = None

    def write(self, kind: str, pieces: Iterable[Chunk | BlockEntry]) -> Layer:
        """A layer of ``kind`` from chunks (stored) and reused block entries."""
        layer = Layer(self.snapshot_id, kind)
        pending: deque[tuple[Chunk, Future[Prepared], Future[tuple[int, int]] | None]
                       | BlockEntry] = deque()
        for piece in pieces:
            if isinstance(piece, BlockEntry):
                pending.append(piece)
            else:
                summed = self._sum(piece) if kind == FULL else None
                pending.append((piece, self.cpu.submit(self.store.prepare, piece.data), summed))
            if len(pending) >= self.opts.in_flight:
                self._advance(layer, pending, self.opts.in_flight // 2)
                self._settle(wait=False)
        self._advance(layer, pending, len(pending))
        self._settle(wait=True)
        return layer

    def _sum(self, chunk: Chunk) -> Future[tuple[int, int]]:
        """(documents, content sum) of a full-layer chunk: on the helper
        processes of a ``HashPool`` once this snapshot has hashed
        ``HASH_INLINE_BYTES`` (document hashing holds the GIL, which the
        reading thread needs), inline before that (no process to start);
        or, for a chunk read with the head's stored digests
        (``chunk.sum``), their sum (the documents are not hashed again)."""
        if chunk.sum is not None:
            done: Future[tuple[int, int]] = Future()
            done.set_result((chunk.count, chunk.sum % _MOD))
            return done
        if self.hasher is None and self._hashed >= HASH_INLINE_BYTES:
            self.hasher = HashPool(max(1, self.opts.workers))
        self._hashed += len(chunk.data)
        if self.hasher is not None:
            return self.hasher.submit(chunk.data)
        fut: Future[tuple[int, int]] = Future()
        n, total, size = hash_documents(chunk.data)
        if n < 0:
            fut.set_exception(IntegrityError(f"bad document length {size} at offset {total}"))
        else:
            fut.set_result((n, total))
        return fut

    def _advance(self, layer: Layer, pending: deque, n: int) -> None:
        items = [pending.popleft() for _ in range(n)]
        ready = [(c, f.result(), _counted(c, summed))
                 for c, f, summed in (i for i in items if not isinstance(i, BlockEntry))]
        refs, todo = self.store.dedup([p for _, p, _ in ready], self.snapshot_id)
        for p in todo:
            self.uploads.append((p, self.io.submit(self.store.upload, p)))
        for ref in refs.values():
            self.stats.account(ref)
        ready_iter = iter(ready)
        for item in items:
            if isinstance(item, BlockEntry):
                entry = item
                self.stats.blocks_reused += 1
            else:
                chunk, p, total = next(ready_iter)
                entry = BlockEntry(p.id, p.size, chunk.count, chunk.first_key, chunk.last_key,
                                   total)
            layer.blocks.append(entry)
            layer.size += entry.size
            layer.docs += entry.records
        self._report()

    def _settle(self, wait: bool) -> None:
        """Index uploaded blocks (all of them with ``wait``)."""
        done: list = []
        rest: list = []
        for item in self.uploads:  # decide once per upload: it may finish meanwhile
            (done if wait or item[1].done() else rest).append(item)
        if not done:
            return
        self.uploads = rest
        for _, f in done:
            f.result()
        for ref in self.store.index([p for p, _ in done], self.snapshot_id).values():
            self.stats.account(ref)

    def _report(self) -> None:
        now = time.monotonic()
        if self.progress is not None and now - self._last_report >= 1.0:
            self._last_report = now
            self.progress(self.stats)


def _counted(chunk: Chunk, summed: Future[tuple[int, int]] | None) -> int | None:
    """The content sum of a chunk's documents, checked to frame ``chunk.count``."""
    if summed is None:
        return None
    try:
        n, total = summed.result()
    except RestoreError as exc:  # from a helper: a malformed document, or a helper lost
        raise IntegrityError(f"a block of {chunk.count} documents: {exc}") from None
    if n != chunk.count:
        raise IntegrityError(f"a block of {chunk.count} documents frames {n}")
    return total


def take(view: HeadReader, store: BlockStore, *, snapshot_id: int, job_id: int,
         head_generation: int = 0, parent: Manifest | None = None,
         opts: TakeOptions | None = None, progress: Progress | None = None) -> tuple[Manifest, TakeStats]:
    """Snapshot the head seen by ``view`` (a ``HeadStore.snapshot()`` read view)."""
    opts = opts or TakeOptions()
    if parent is not None and (parent.head_generation != head_generation
                               or parent.mark > view.mark()):
        parent = None  # another head (resync) or a head that went back: start over
    stats = TakeStats()
    m = Manifest(snapshot_id, job_id, "full", *_optime(view), view.mark(), head_generation,
                 datetime.now(UTC).isoformat(), parent.snapshot if parent else None)
    writer = LayerWriter(store, snapshot_id, opts, stats, progress)
    try:
        for c in view.collections():
            entry = _entry(view, c)
            if c.holds_documents:
                prev = parent.collection(c.db, c.name) if parent is not None else None
                entry.layers = _layers(view, c, prev, parent, store, writer, opts, stats)
                check_sums(entry)
                stats.bytes_logical += sum(la.size for la in entry.layers)
            stats.docs += entry.count
            m.collections.append(entry)
    finally:
        writer.close()
    m.kind = _kind(stats.kinds)
    return m, stats


def check_sums(entry: CollectionEntry) -> None:
    """``IntegrityError`` unless the recorded block sums of ``entry`` (when it
    has a complete set: ``CollectionEntry.block_sums``) add up to its count
    and content hash."""
    blocks = entry.block_sums()
    if blocks is None:
        return
    count = sum(b.records for b in blocks)
    total = sum(b.sum or 0 for b in blocks) % _MOD
    if (count, total) != (entry.count, int(entry.hash, 16)):
        raise IntegrityError(f"{entry.ns}: the snapshot's blocks hold {count} documents "
                             f"/{total:064x}, the head records {entry.count} /{entry.hash}")


def _optime(view: HeadReader) -> tuple[int, int]:
    o = view.optime()
    return o.ts, o.t


def _entry(view: HeadReader, c: Collection) -> CollectionEntry:
    h = view.content_hash(c) if c.holds_documents else ContentHash()
    return CollectionEntry(c.db, c.name, c.type, c.uuid, c.options, view.indexes(c),
                           h.count, h.hexdigest(), c.cid, c.generation, view.index_builds(c))


def _layers(view: HeadReader, c: Collection, prev: CollectionEntry | None,
            parent: Manifest | None, store: BlockStore, writer: LayerWriter,
            opts: TakeOptions, stats: TakeStats) -> list[Layer]:
    usable = (parent is not None and prev is not None and prev.cid == c.cid
              and c.generation <= parent.mark and prev.layers and opts.force != "full")
    if not usable:
        _count(stats, "full")
        return [writer.write(FULL, chunks(view.export_digested(c), opts.params, summed=True))]
    assert parent is not None and prev is not None
    changes = view.changes_since(parent.mark, c)
    if opts.force == "synthetic" or _needs_consolidation(prev.layers, opts):
        _count(stats, "synthetic")
        pieces = L.synthesize(prev.layers, store.get_block, changes, opts.params)
        return [writer.write(FULL, pieces)]
    _count(stats, "incremental")
    tally = [0]
    delta = writer.write(DELTA, chunks(_delta_records(changes, tally), opts.params))
    if not delta.blocks:
        return list(prev.layers)
    delta.tombstones = tally[0]
    delta.docs -= tally[0]
    return [*prev.layers, delta]


def _delta_records(changes: Iterable[L.Change], tombstones: list[int]
                   ) -> Iterator[tuple[bytes, bytes]]:
    for k, d in changes:
        if d is None:
            tombstones[0] += 1
        yield k, L.delta_record(k, d)


def _needs_consolidation(chain: list[Layer], opts: TakeOptions) -> bool:
    if opts.full_every and len(chain) >= opts.full_every:
        return True
    base, deltas = chain[0].size, sum(la.size for la in chain[1:])
    return deltas > 0 and deltas * 100 > opts.full_delta_percent * max(base, 1)


def _count(stats: TakeStats, kind: str) -> None:
    stats.kinds[kind] = stats.kinds.get(kind, 0) + 1


def _kind(kinds: dict[str, int]) -> str:
    if kinds.get("synthetic"):
        return "synthetic"
    if kinds.get("incremental"):
        return "incremental"
    return "full"


# -- reading and verifying --------------------------------------------------

def read_collection(store: BlockStore, m: Manifest, db: str, name: str,
                    prefetch: int = 2) -> Iterator[bytes]:
    """The raw documents of ``db.name`` in the snapshot, in ``_id`` order."""
    entry = m.collection(db, name)
    if entry is None:
        from backupflows.errors import NotFound

        raise NotFound(f"snapshot {m.snapshot} has no collection {db}.{name}")
    return read_entry(store, entry, prefetch)


def read_entry(store: BlockStore, entry: CollectionEntry, prefetch: int = 2) -> Iterator[bytes]:
    if not entry.layers:
        return iter(())
    return L.merge(entry.layers, lambda ids: store.iter_blocks(ids, prefetch))


@dataclass
class VerifyResult:
    blocks_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(store: BlockStore, m: Manifest, *, deep: bool = True,
           checked: dict[str, str | None] | None = None) -> VerifyResult:
    """Check every block of the snapshot (hash) and, with ``deep``, recompute
    every collection's count and content hash against the manifest.
    ``checked`` caches block results across snapshots (block id -> problem)."""
    result = VerifyResult()
    cache = checked if checked is not None else {}
    bad: set[str] = set()
    for bid in m.block_ids():
        if bid not in cache:
            cache[bid] = store.verify_block(bid)
            result.blocks_checked += 1
        if cache[bid] is not None:
            bad.add(bid)
            result.problems.append(f"snapshot {m.snapshot}: {cache[bid]}")
    if deep:
        for entry in m.collections:
            if entry.holds_documents and not bad & set(entry.block_ids()):
                problem = _check_entry(store, m, entry)
                if problem is not None:
                    result.problems.append(problem)
    return result


def _check_entry(store: BlockStore, m: Manifest, entry: CollectionEntry) -> str | None:
    """The collection's documents recomputed from its blocks: count and content
    hash against the manifest's, and every whole block's recorded content sum
    (format 2) against its own documents."""
    h = ContentHash()
    wrong: list[str] = []
    try:
        runs = L.merge_runs(entry.layers, lambda ids: store.iter_blocks(ids, 2)) \
            if entry.layers else iter(())
        for data, block in runs:
            if block is None:
                h.add(data)
                continue
            n, total, size = hash_documents(data)
            if n < 0:
                raise IntegrityError(f"block {block.id}: bad document length {size} "
                                     f"at offset {total}")
            if block.sum is not None and (n, total) != (block.records, block.sum):
                wrong.append(block.id)
            h.add_digest(total, n)
    except Exception as exc:  # noqa: BLE001 - every failure is a finding
        return f"snapshot {m.snapshot}: {entry.ns}: {exc}"
    if wrong:
        return (f"snapshot {m.snapshot}: {entry.ns}: block(s) {', '.join(wrong[:5])} do not "
                f"hold the documents whose count/content sum the manifest records")
    if (h.count, h.hexdigest()) != (entry.count, entry.hash):
        return (f"snapshot {m.snapshot}: {entry.ns}: recomputed {h.count} documents "
                f"/{h.hexdigest()[:12]} != manifest {entry.count}/{entry.hash[:12]}")
    return None
