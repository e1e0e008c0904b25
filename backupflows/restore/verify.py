"""Verification of what a restore actually delivers.

Every document handed to a destination passes through a ``Checked`` stream
that counts it and adds it to the content hash of ``backupflows.contenthash``
(raw bytes, field order included). When the stream ends, the count and hash
must equal the ones recorded at snapshot time (or, for a point in time, the
rolled-forward head's). Block hashes are checked by the blockstore read
itself (``BlockStore.get_block``). Any mismatch is a ``RestoreError``: the
restore fails and is never marked done.

A stream is read either document by document (``docs()``) or as chunks of
whole documents back to back (``chunks()``, what a ``.bson`` file holds).
Its source is either a document iterator or, for a collection stored as one
full layer, the blocks themselves: then chunks pass through untouched and
only the hashing walks the documents (no per-document objects), on the
helper processes of a ``HashPool`` when one is given (the restore writes
while they hash; the verdict waits for every chunk's answer).

When the manifest records the content sum of every block (format 2, see
``backupflows.storage.manifest``), the blocks stream is verified without
hashing a document: each block was checked against its SHA-256 id by the
blockstore read, its size is checked against the manifest, and its recorded
document count and sum (computed from those exact bytes at snapshot time,
where they were checked to add up to the head's hash) are accounted. The
verdict is the same comparison: the accounted count and hash must equal the
collection's recorded ones, and every listed block must have been read.

A collection with delta layers (or a point in time merged with the oplog's
changes) is read as runs (``layers.merge_runs``): base blocks that no change
touches come whole and are accounted by their recorded sums; every other
document (from a touched block, a delta layer or the head) is hashed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future

from backupflows.contenthash import DIGEST_STATE, ContentHash
from backupflows.errors import RestoreError, StorageError
from backupflows.restore.hashpool import HashPool
from backupflows.restore.hashworker import hash_documents
from backupflows.storage.layers import Run
from backupflows.storage.manifest import BlockEntry

Progress = Callable[[int, int], None]  # (documents, bytes) since the last call
CHUNK_BYTES = 1 << 20
_MOD = 1 << 256


def hash_chunk(data: bytes, what: str) -> tuple[int, int]:
    """(documents, sum of their digests) of whole documents back to back."""
    n, total, size = hash_documents(data)
    if n < 0:
        raise RestoreError(f"{what}: bad document length {size} at offset {total}")
    return n, total


class Checked:
    """A verified stream of one item (see the module docstring); ``check()``
    once it is consumed."""

    def __init__(self, docs: Iterable[bytes] | None, expected: ContentHash | None, what: str,
                 progress: Progress | None = None, *,
                 blocks: Iterable[bytes] | None = None, pool: HashPool | None = None,
                 sums: list[BlockEntry] | None = None,
                 runs: Iterable[Run] | None = None) -> None:
        if sum(x is not None for x in (docs, blocks, runs)) != 1:
            raise ValueError("a checked stream reads documents, blocks or runs")
        if sums is not None and blocks is None:
            raise ValueError("recorded block sums go with a blocks stream")
        self._docs, self._blocks, self.pool, self.sums = docs, blocks, pool, sums
        self._runs = runs
        self.expected = expected
        self.what = what
        self.progress = progress
        self.count = 0
        self.total = 0
        self.nbytes = 0
        self.finished = False

    # -- the two ways of reading --------------------------------------------------------

    def docs(self) -> Iterator[bytes]:
        """Documents one by one."""
        if self._runs is not None:
            from backupflows.storage.layers import split_docs

            for data, whole in self._each_run():
                if whole:
                    yield from split_docs(data, self.what)
                else:
                    yield data
            return
        if self._docs is None:
            from backupflows.storage.layers import split_docs

            for chunk in self.chunks():
                yield from split_docs(chunk, self.what)
            return
        yield from self._each_doc()

    def chunks(self) -> Iterator[bytes]:
        """Whole documents back to back, about ``CHUNK_BYTES`` at a time."""
        if self._runs is not None:
            buf: list[bytes] = []
            size = 0
            for data, whole in self._each_run():
                if whole or size >= CHUNK_BYTES:
                    if buf:
                        yield b"".join(buf)
                        buf, size = [], 0
                    if whole:
                        yield data
                        continue
                buf.append(data)
                size += len(data)
            if buf:
                yield b"".join(buf)
            return
        if self._blocks is None:
            yield from _joined(self._each_doc())
            return
        if self.sums is not None:
            yield from self._recorded_blocks(self._blocks, self.sums)
            return
        pending: deque[tuple[Future[tuple[int, int]], int]] = deque()
        try:
            for data in self._blocks:
                if self.pool is None:
                    n, total = hash_chunk(data, self.what)
                    self._account(n, total, len(data))
                else:
                    pending.append((self.pool.submit(data), len(data)))
                    while pending and pending[0][0].done():
                        self._settle(*pending.popleft())
                yield data
            while pending:
                self._settle(*pending.popleft())
        except StorageError as exc:
            raise RestoreError(f"{self.what}: reading the snapshot failed: {exc}") from exc
        self.finished = True

    def _each_run(self) -> Iterator[tuple[bytes, bool]]:
        """``(data, whole block?)`` of a runs source (``layers.merge_runs``),
        accounted: an untouched block by its recorded count and sum (hashed
        when it has none), a document alone by its hash."""
        assert self._runs is not None
        from_bytes, fresh = int.from_bytes, DIGEST_STATE.copy
        n = nbytes = total = 0
        try:
            for data, entry in self._runs:
                if entry is None:
                    h = fresh()
                    h.update(data)
                    total += from_bytes(h.digest(), "big")
                    nbytes += len(data)
                    n += 1
                    if n == 2000:
                        self._account(n, total, nbytes)
                        n = nbytes = total = 0
                    yield data, False
                    continue
                if len(data) != entry.size:
                    raise RestoreError(f"{self.what}: block {entry.id} holds {len(data)} "
                                       f"bytes, the manifest records {entry.size}")
                if entry.sum is None:
                    self._account(*hash_chunk(data, f"{self.what}: block {entry.id}"),
                                  len(data))
                else:
                    self._account(entry.records, entry.sum, len(data))
                yield data, True
        except StorageError as exc:
            raise RestoreError(f"{self.what}: reading the snapshot failed: {exc}") from exc
        self._account(n, total, nbytes)
        self.finished = True

    def _recorded_blocks(self, blocks: Iterable[bytes], sums: list[BlockEntry]
                         ) -> Iterator[bytes]:
        """Blocks accounted by their recorded counts and sums (module docstring)."""
        it = iter(sums)
        try:
            for data in blocks:
                entry = next(it, None)
                if entry is None:
                    raise RestoreError(f"{self.what}: more blocks than the manifest lists")
                if len(data) != entry.size or entry.sum is None:
                    raise RestoreError(f"{self.what}: block {entry.id} holds {len(data)} "
                                       f"bytes, the manifest records {entry.size}")
                self._account(entry.records, entry.sum, len(data))
                yield data
        except StorageError as exc:
            raise RestoreError(f"{self.what}: reading the snapshot failed: {exc}") from exc
        missing = sum(1 for _ in it)
        if missing:
            raise RestoreError(f"{self.what}: {missing} block(s) of the manifest were not read")
        self.finished = True

    def _settle(self, fut: Future[tuple[int, int]], size: int) -> None:
        try:
            n, total = fut.result()
        except RestoreError as exc:
            raise RestoreError(f"{self.what}: {exc}") from None
        self._account(n, total, size)

    def __iter__(self) -> Iterator[bytes]:
        return self.docs()

    def _each_doc(self) -> Iterator[bytes]:
        assert self._docs is not None
        from_bytes, fresh = int.from_bytes, DIGEST_STATE.copy
        n = nbytes = total = 0
        try:
            for doc in self._docs:
                h = fresh()
                h.update(doc)
                total += from_bytes(h.digest(), "big")
                nbytes += len(doc)
                n += 1
                if n == 2000:
                    self._account(n, total, nbytes)
                    n = nbytes = total = 0
                yield doc
        except StorageError as exc:
            raise RestoreError(f"{self.what}: reading the snapshot failed: {exc}") from exc
        self._account(n, total, nbytes)
        self.finished = True

    def _account(self, n: int, total: int, nbytes: int) -> None:
        self.count += n
        self.total = (self.total + total) % _MOD
        self.nbytes += nbytes
        if self.progress is not None and n:
            self.progress(n, nbytes)

    # -- the verdict -------------------------------------------------------------------

    @property
    def seen(self) -> ContentHash:
        return ContentHash(self.count, self.total)

    def check(self) -> ContentHash:
        """Raise ``RestoreError`` unless every document was read and the
        count and hash match; returns what was delivered."""
        if not self.finished:
            raise RestoreError(f"{self.what}: the document stream was not read to its end")
        seen = self.seen
        if self.expected is not None and (seen.count, seen.total) != (
                self.expected.count, self.expected.total):
            raise RestoreError(
                f"{self.what}: verification failed: delivered {seen.count} documents "
                f"/{seen.hexdigest()[:16]}, recorded {self.expected.count} "
                f"/{self.expected.hexdigest()[:16]}")
        return seen


def _joined(docs: Iterable[bytes]) -> Iterator[bytes]:
    buf: list[bytes] = []
    size = 0
    for doc in docs:
        buf.append(doc)
        size += len(doc)
        if size >= CHUNK_BYTES:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)
