"""Verification of what a restore actually delivers.

Every document handed to a destination passes through a ``Checked`` stream
that counts it and adds it to a content hash (``backupflows.contenthash``:
raw bytes, field order included). When the stream ends, the count and hash
must equal the ones recorded at snapshot time (or, for a point in time, the
rolled-forward head's). Block hashes are checked by the blockstore read
itself (``BlockStore.get_block``). Any mismatch is a ``RestoreError``: the
restore fails and is never marked done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from backupflows.contenthash import ContentHash
from backupflows.errors import RestoreError, StorageError

Progress = Callable[[int, int], None]  # (documents, bytes) since the last call


class Checked:
    """Iterate ``docs`` (raw BSON), hashing them; ``check()`` once consumed."""

    def __init__(self, docs: Iterable[bytes], expected: ContentHash | None, what: str,
                 progress: Progress | None = None, every: int = 2000) -> None:
        self.docs = docs
        self.expected = expected
        self.what = what
        self.progress = progress
        self.every = every
        self.seen = ContentHash()
        self.nbytes = 0
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        h, progress, every = self.seen, self.progress, self.every
        n = nbytes = 0
        try:
            for doc in self.docs:
                h.add(doc)
                nbytes += len(doc)
                n += 1
                if progress is not None and n == every:
                    progress(n, nbytes)
                    self.nbytes += nbytes
                    n = nbytes = 0
                yield doc
        except StorageError as exc:
            raise RestoreError(f"{self.what}: reading the snapshot failed: {exc}") from exc
        self.nbytes += nbytes
        if progress is not None and n:
            progress(n, nbytes)
        self.finished = True

    def check(self) -> ContentHash:
        """Raise ``RestoreError`` unless every document was read and the
        count and hash match; returns what was delivered."""
        if not self.finished:
            raise RestoreError(f"{self.what}: the document stream was not read to its end")
        if self.expected is not None and (self.seen.count, self.seen.total) != (
                self.expected.count, self.expected.total):
            raise RestoreError(
                f"{self.what}: verification failed: delivered {self.seen.count} documents "
                f"/{self.seen.hexdigest()[:16]}, recorded {self.expected.count} "
                f"/{self.expected.hexdigest()[:16]}")
        return self.seen
