"""Raw BSON pieces shared by the update appliers (delta, modifiers, replacement).

These appliers never decode a whole document: they walk its elements as
bytes, copy untouched elements as they are and build only the elements an
update changes. (The ``$v: 2`` fast path in ``deltadict`` decodes with the C
codec instead, only where that gives the same bytes.)  An *element* is ``type byte + name + NUL + value bytes``; a document
is ``int32 length + elements + NUL``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Any

import bson

from backupflows.bsonorder import KeyError_, skip_value
from backupflows.errors import OplogError

__all__ = [
    "InvalidUpdate", "BSON_ERRORS", "NULL", "OBJECT", "ARRAY", "BINARY",
    "raw_of", "check_document", "document", "elements", "index_name", "i32",
    "VALUE_SIZE", "value_end",
]

NULL, OBJECT, ARRAY, BINARY, BOOL, INT32, INT64 = 0x0A, 0x03, 0x04, 0x05, 0x08, 0x10, 0x12

#: Exceptions raised by byte-level walking of truncated or corrupt BSON.
BSON_ERRORS = (struct.error, IndexError, ValueError, KeyError_)

_I32 = struct.Struct("<i")
i32 = _I32.unpack_from
_pack_i32 = _I32.pack

_INDEX_NAMES = [str(i).encode() for i in range(4096)]


def _value_size_table() -> list[int]:
    """Per type byte: the fixed value size (0-16); 100 + n for values that are
    ``n`` bytes plus an int32 length read at the value's start; -1 for the rest
    (regex, unknown types: ask ``skip_value``)."""
    table = [-1] * 256
    for t, size in {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x06: 0, 0x10: 4,
                    0x11: 8, 0x12: 8, 0x13: 16, 0xFF: 0, 0x7F: 0}.items():
        table[t] = size
    for t, extra in {0x02: 4, 0x0D: 4, 0x0E: 4, 0x03: 0, 0x04: 0, 0x0F: 0, 0x05: 5,
                     0x0C: 16}.items():
        table[t] = 100 + extra
    return table


#: Inline value walking (hot loops):
#:   k = VALUE_SIZE[t]
#:   end = vs + k if 0 <= k < 100 else vs + k - 100 + i32(buf, vs)[0] if k >= 100
#:         else skip_value(t, buf, vs)
VALUE_SIZE = _value_size_table()


def value_end(t: int, buf: bytes, vs: int) -> int:
    """Offset just past the value of type ``t`` starting at ``vs``."""
    k = VALUE_SIZE[t]
    if k >= 100:
        return vs + k - 100 + i32(buf, vs)[0]
    if k >= 0:
        return vs + k
    return skip_value(t, buf, vs)


class InvalidUpdate(OplogError):
    """An update entry's ``o`` is malformed (bad diff, unknown modifier,
    conflicting paths), or the document it targets is not valid BSON."""


def index_name(idx: int) -> bytes:
    """The field name of array element ``idx`` (``b"0"``, ``b"1"``, ...)."""
    if idx < 4096:
        return _INDEX_NAMES[idx]
    return str(idx).encode()


def raw_of(value: Any) -> bytes:
    """Raw BSON bytes of a document given as bytes, a RawBSONDocument or a
    mapping (encoded once, in its own field order)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raw = getattr(value, "raw", None)
    if isinstance(raw, bytes):
        return raw
    if isinstance(value, Mapping):
        return bson.encode(value)
    raise InvalidUpdate(f"expected a document, got {type(value).__name__}")


def check_document(raw: bytes, what: str = "document") -> None:
    """Cheap framing check of a whole raw document (length prefix, final NUL)."""
    if len(raw) < 5 or i32(raw, 0)[0] != len(raw) or raw[-1] != 0:
        raise InvalidUpdate(f"{what} is not valid BSON: length prefix does not match")


def document(pieces: list[bytes]) -> bytes:
    """A raw document made of the concatenated element bytes ``pieces``."""
    body = b"".join(pieces)
    return _pack_i32(len(body) + 5) + body + b"\x00"


_value_end = value_end


def elements(buf: bytes, start: int = 0) -> Iterator[tuple[int, int, int, int]]:
    """Walk the document at ``buf[start]``: yield (type, element start,
    name end (the NUL), value end) for every element."""
    end = start + i32(buf, start)[0] - 1
    pos = start + 4
    while pos < end:
        t = buf[pos]
        name_end = buf.index(b"\x00", pos + 1)
        value_end = _value_end(t, buf, name_end + 1)
        if value_end > end:
            raise InvalidUpdate("BSON element runs past the end of its document")
        yield t, pos, name_end, value_end
        pos = value_end
