"""Concatenated raw BSON documents (a find batch, a slice, a segment payload).

``spans`` walks the 4-byte length prefixes only: nothing is decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from backupflows.errors import IntegrityError

_LEN = struct.Struct("<i").unpack_from
MIN_DOC = 5


def spans(buf: bytes | memoryview, what: str = "stream") -> Iterator[tuple[int, int]]:
    """``(start, end)`` of every document in ``buf``; ``IntegrityError`` if a
    length prefix is impossible or runs past the end."""
    pos, size = 0, len(buf)
    while pos < size:
        if size - pos < MIN_DOC:
            raise IntegrityError(f"{what}: truncated document at offset {pos}")
        end = pos + _LEN(buf, pos)[0]
        if end - pos < MIN_DOC or end > size or buf[end - 1] != 0:
            raise IntegrityError(f"{what}: corrupt document length at offset {pos}")
        yield pos, end
        pos = end


def split(buf: bytes, what: str = "stream") -> Iterator[bytes]:
    """Every document of ``buf`` as its own ``bytes``."""
    for start, end in spans(buf, what):
        yield buf[start:end]
