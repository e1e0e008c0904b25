"""The per-collection content hash every part of backupflows compares.

A collection's content is the multiset of its documents as raw BSON bytes
(field order included). Its hash is the sum, modulo 2**256, of the BLAKE2b-256
digest of every document (an additive multiset hash): independent of the order
in which documents are read, and maintainable incrementally (add the new
version of a document, subtract the old one). The head keeps it current while
applying the oplog; snapshots record it; restores and validation recompute it
from a stream and compare.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b

_MOD = 1 << 256


# The initial BLAKE2b-256 state: ``doc_digest`` copies it (cheaper than a
# constructor call); a hot loop may do the same inline.
DIGEST_STATE = blake2b(digest_size=32)


def doc_digest(raw: bytes) -> int:
    """Digest of one raw BSON document, as an integer."""
    h = DIGEST_STATE.copy()
    h.update(raw)
    return int.from_bytes(h.digest(), "big")


@dataclass
class ContentHash:
    """Running count and hash of a collection's documents."""

    count: int = 0
    total: int = 0

    def add(self, raw: bytes) -> None:
        self.count += 1
        self.total = (self.total + doc_digest(raw)) % _MOD

    def remove(self, raw: bytes) -> None:
        self.count -= 1
        self.total = (self.total - doc_digest(raw)) % _MOD

    def add_digest(self, digest: int, count: int = 1) -> None:
        self.count += count
        self.total = (self.total + digest) % _MOD

    def hexdigest(self) -> str:
        return f"{self.total:064x}"

    @classmethod
    def of(cls, docs: Iterable[bytes]) -> ContentHash:
        h = cls()
        for raw in docs:
            h.add(raw)
        return h

    @classmethod
    def from_hex(cls, count: int, hexdigest: str) -> ContentHash:
        return cls(count, int(hexdigest, 16))
