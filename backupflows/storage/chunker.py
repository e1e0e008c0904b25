"""Content-defined chunking of a document stream, at document boundaries.

The chunker is a pure iterator: it takes ``(key, record)`` pairs (the
order-preserving ``_id`` key of a document and the bytes that represent it in
a layer) and groups consecutive records into blocks. It knows nothing of
storage, hashing of blocks or compression.

The rule (``ChunkParams(avg, min, max)``, defaults 1 MiB / avg/4 / avg*4):

- a block never splits a record: cuts happen only *after* a record;
- after appending a record of ``s`` bytes, with the block now ``size`` bytes:
  - ``size >= max``: cut (forced);
  - ``size >= min`` and ``crc32(key) < s * 2**32 / (avg - min)``: cut;
  - otherwise keep going.

Each record is a cut candidate with probability ``s / (avg - min)`` (its
share of the bytes expected past the minimum), so the expected block size is
about ``avg`` whatever the document sizes, and the decision costs one CRC of
a short key per document (fast in Python: no per-byte rolling hash). Because
the decision depends only on the record's own key and size (and on the block
being past ``min``), boundaries are local: an unchanged run of documents
produces the same cuts, hence identical blocks that deduplicate; changing,
inserting or deleting one document changes the block that holds it and, at
most, the next one or two until a cut point is met again (O(1) blocks).
Keying the hash on ``_id`` rather than on the document makes an in-place
update keep its block's boundaries unless its size crosses the threshold.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MiB = 1 << 20
_SPACE = 1 << 32


@dataclass(frozen=True)
class ChunkParams:
    """Average, minimum and maximum block size in bytes."""

    avg: int = MiB
    min: int = 0
    max: int = 0

    def __post_init__(self) -> None:
        if self.avg < 64:
            raise ValueError(f"average block size {self.avg} is too small (>= 64 bytes)")
        if self.min == 0:
            object.__setattr__(self, "min", self.avg // 4)
        if self.max == 0:
            object.__setattr__(self, "max", self.avg * 4)
        if not 0 < self.min < self.avg < self.max:
            raise ValueError(f"block sizes must satisfy 0 < min < avg < max, got "
                             f"{self.min}/{self.avg}/{self.max}")


@dataclass
class Chunk:
    """One block's worth of records: their concatenation and key range, and
    (``chunks(..., summed=True)``) the sum of the digests given with them."""

    data: bytes
    count: int
    first_key: bytes
    last_key: bytes
    sum: int | None = None


def chunks(records: Iterable[tuple[bytes, bytes]] | Iterable[tuple[bytes, bytes, int]],
           params: ChunkParams = ChunkParams(), *, summed: bool = False) -> Iterator[Chunk]:
    """Group ``(key, record)`` pairs (in key order) into blocks; see the module
    docstring for the cut rule. With ``summed``, records are ``(key, record,
    digest)`` and each chunk carries the sum of its records' digests
    (unreduced: callers take it modulo what their hash needs)."""
    lo, hi = params.min, params.max
    scale = _SPACE / (params.avg - params.min)
    crc = zlib.crc32
    parts: list[bytes] = []
    size = 0
    total = 0
    first = b""
    key = b""
    for item in records:
        if summed:
            key, rec, digest = item  # type: ignore[misc]
            total += digest
        else:
            key, rec = item  # type: ignore[misc]
        if not parts:
            first = key
        parts.append(rec)
        s = len(rec)
        size += s
        if size >= hi or (size >= lo and crc(key) < s * scale):
            yield Chunk(b"".join(parts), len(parts), first, key, total if summed else None)
            parts = []
            size = 0
            total = 0
    if parts:
        yield Chunk(b"".join(parts), len(parts), first, key, total if summed else None)


def cut_after(key: bytes, record_size: int, block_size: int, params: ChunkParams) -> bool:
    """The cut decision for one record (the rule of ``chunks``, for tests and docs)."""
    if block_size >= params.max:
        return True
    threshold = record_size * _SPACE / (params.avg - params.min)
    return block_size >= params.min and zlib.crc32(key) < threshold


class Chunker:
    """The rule of ``chunks`` fed one record at a time (for merges that mix
    reused blocks with new records)."""

    def __init__(self, params: ChunkParams = ChunkParams()) -> None:
        self.params = params
        self._scale = _SPACE / (params.avg - params.min)
        self._parts: list[bytes] = []
        self._size = 0
        self._first = b""
        self._last = b""

    @property
    def fresh(self) -> bool:
        """True when the next record starts a new block."""
        return not self._parts

    def add(self, key: bytes, rec: bytes) -> Chunk | None:
        if not self._parts:
            self._first = key
        self._last = key
        self._parts.append(rec)
        s = len(rec)
        self._size += s
        if self._size >= self.params.max or (
                self._size >= self.params.min and zlib.crc32(key) < s * self._scale):
            return self._cut(key)
        return None

    def finish(self) -> Chunk | None:
        """The last, partial block (None if empty)."""
        return self._cut(self._last) if self._parts else None

    def _cut(self, key: bytes) -> Chunk:
        chunk = Chunk(b"".join(self._parts), len(self._parts), self._first, key)
        self._parts, self._size = [], 0
        return chunk
