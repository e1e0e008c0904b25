"""Layer records, and reading a collection by merging its layers.

Record formats inside blocks:

- a ``full`` layer block is the raw BSON documents back to back (the bytes of
  a ``.bson`` file: ``cat`` of a layer's blocks is a mongodump data file);
- a ``delta`` layer block is records back to back: ``b"D"`` + raw document
  (upserted), or ``b"T"`` + uint32 key length + ``_id`` key (deleted).

``merge`` streams a collection from its layer chain: a k-way merge by
``_id`` key in which the newest layer wins and tombstones delete. Base blocks
whose key range holds no change are passed through without computing a key
(``merge_runs`` hands them over whole, so a restore can verify them by their
recorded content sums).
``synthesize`` merges a chain into a new full layer, reusing every base block
that the merge leaves intact (no read, no re-upload) — the chunk boundaries
are the ones chunking the merged stream from scratch would give.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterable, Iterator

from backupflows.bsonorder import KeyError_, id_key
from backupflows.errors import IntegrityError
from backupflows.storage.chunker import Chunk, Chunker, ChunkParams
from backupflows.storage.manifest import DELTA, FULL, BlockEntry, Layer

_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I")
DOC, TOMB = b"D"[0], b"T"[0]

Change = tuple[bytes, bytes | None]  # (_id key, raw document or None = deleted)
Fetch = Callable[[list[str]], Iterator[bytes]]


def delta_record(key: bytes, doc: bytes | None) -> bytes:
    if doc is None:
        return b"T" + _U32.pack(len(key)) + key
    return b"D" + doc


def split_docs(data: bytes, what: str = "block") -> Iterator[bytes]:
    """The raw documents of a full-layer block."""
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 5:
            raise IntegrityError(f"{what}: truncated document at offset {pos}")
        n = _I32(data, pos)[0]
        if n < 5 or pos + n > end or data[pos + n - 1] != 0:
            raise IntegrityError(f"{what}: bad document length {n} at offset {pos}")
        yield data[pos:pos + n]
        pos += n


def split_delta(data: bytes, what: str = "block") -> Iterator[Change]:
    """(key, document or None) of the records of a delta-layer block."""
    pos, end = 0, len(data)
    while pos < end:
        tag = data[pos]
        if tag == DOC:
            n = _I32(data, pos + 1)[0] if end - pos >= 6 else 0
            if n < 5 or pos + 1 + n > end:
                raise IntegrityError(f"{what}: bad document record at offset {pos}")
            doc = data[pos + 1:pos + 1 + n]
            yield _key(doc, what), doc
            pos += 1 + n
        elif tag == TOMB and end - pos >= 5:
            n = _U32.unpack_from(data, pos + 1)[0]
            yield data[pos + 5:pos + 5 + n], None
            pos += 5 + n
        else:
            raise IntegrityError(f"{what}: bad record tag at offset {pos}")


def _key(doc: bytes, what: str) -> bytes:
    try:
        return id_key(doc)
    except KeyError_ as exc:
        raise IntegrityError(f"{what}: {exc}") from None


def layer_changes(layer: Layer, fetch: Fetch) -> Iterator[Change]:
    """The records of one layer, in key order."""
    ids = [b.id for b in layer.blocks]
    for entry, data in zip(layer.blocks, fetch(ids)):
        what = f"block {entry.id}"
        if layer.kind == FULL:
            for doc in split_docs(data, what):
                yield _key(doc, what), doc
        else:
            yield from split_delta(data, what)


def newest_wins(streams: list[Iterator[Change]]) -> Iterator[Change]:
    """Merge change streams (oldest first) by key; for equal keys the newest wins."""
    if len(streams) == 1:
        yield from streams[0]
        return
    tagged = [_tag(s, -i) for i, s in enumerate(streams)]
    last: bytes | None = None
    for k, _, d in heapq.merge(*tagged, key=lambda t: (t[0], t[1])):
        if k != last:
            last = k
            yield k, d


def _tag(stream: Iterator[Change], rank: int) -> Iterator[tuple[bytes, int, bytes | None]]:
    for k, d in stream:
        yield k, rank, d


def _deltas(layers: list[Layer], fetch: Fetch, extra: Iterable[Change] | None) -> Iterator[Change]:
    streams = [layer_changes(la, fetch) for la in layers]
    if extra is not None:
        streams.append(iter(extra))
    if not streams:
        return iter(())
    return newest_wins(streams)


def _check_chain(layers: list[Layer]) -> None:
    if not layers or layers[0].kind != FULL or any(la.kind != DELTA for la in layers[1:]):
        raise IntegrityError("a layer chain is one full layer followed by delta layers")


def merge(layers: list[Layer], fetch: Fetch, extra: Iterable[Change] | None = None
          ) -> Iterator[bytes]:
    """The raw documents of a collection from its layer chain (plus ``extra``
    newer changes), in ``_id`` order, streamed."""
    for data, entry in merge_runs(layers, fetch, extra):
        if entry is None:
            yield data
        else:
            yield from split_docs(data, f"block {entry.id}")


Run = tuple[bytes, BlockEntry | None]  # a whole untouched base block, or one document


def merge_runs(layers: list[Layer], fetch: Fetch, extra: Iterable[Change] | None = None
               ) -> Iterator[Run]:
    """``merge`` in runs: a base block whose key range holds no change comes
    whole, with its entry (its documents are delivered exactly as stored, so
    its recorded content sum is theirs); every other document comes alone
    (entry None)."""
    _check_chain(layers)
    base = layers[0]
    deltas = _deltas(layers[1:], fetch, extra)
    nxt = next(deltas, None)
    ids = [b.id for b in base.blocks]
    for entry, data in zip(base.blocks, fetch(ids)):
        what = f"block {entry.id}"
        while nxt is not None and nxt[0] < entry.first_key:
            if nxt[1] is not None:
                yield nxt[1], None
            nxt = next(deltas, None)
        if nxt is None or nxt[0] > entry.last_key:
            yield data, entry
            continue
        for doc in split_docs(data, what):
            k = _key(doc, what)
            while nxt is not None and nxt[0] < k:
                if nxt[1] is not None:
                    yield nxt[1], None
                nxt = next(deltas, None)
            if nxt is not None and nxt[0] == k:
                if nxt[1] is not None:
                    yield nxt[1], None
                nxt = next(deltas, None)
                continue
            yield doc, None
    while nxt is not None:
        if nxt[1] is not None:
            yield nxt[1], None
        nxt = next(deltas, None)


Piece = BlockEntry | Chunk  # a reused base block, or a new chunk to store


def synthesize(layers: list[Layer], fetch_one: Callable[[str], bytes],
               extra: Iterable[Change] | None, params: ChunkParams) -> Iterator[Piece]:
    """A new full layer from a chain (plus ``extra`` newer changes): base blocks
    that nothing changes and that start where the chunker would start a block
    are reused as they are (the last one only when nothing follows it, so the
    result is block for block what chunking the merged stream gives);
    everything else is re-chunked."""
    _check_chain(layers)
    base = layers[0]
    deltas = _deltas(layers[1:], lambda ids: (fetch_one(i) for i in ids), extra)
    nxt = next(deltas, None)
    ch = Chunker(params)
    last = len(base.blocks) - 1
    for i, entry in enumerate(base.blocks):
        while nxt is not None and nxt[0] < entry.first_key:
            if nxt[1] is not None:
                yield from _some(ch.add(nxt[0], nxt[1]))
            nxt = next(deltas, None)
        untouched = nxt is None or nxt[0] > entry.last_key
        if ch.fresh and untouched and (i < last or nxt is None):
            yield entry
            continue
        what = f"block {entry.id}"
        for doc in split_docs(fetch_one(entry.id), what):
            k = _key(doc, what)
            while nxt is not None and nxt[0] < k:
                if nxt[1] is not None:
                    yield from _some(ch.add(nxt[0], nxt[1]))
                nxt = next(deltas, None)
            if nxt is not None and nxt[0] == k:
                doc = nxt[1]  # type: ignore[assignment]
                nxt = next(deltas, None)
                if doc is None:
                    continue
            yield from _some(ch.add(k, doc))
    while nxt is not None:
        if nxt[1] is not None:
            yield from _some(ch.add(nxt[0], nxt[1]))
        nxt = next(deltas, None)
    yield from _some(ch.finish())


def _some(chunk: Chunk | None) -> Iterator[Chunk]:
    if chunk is not None:
        yield chunk
