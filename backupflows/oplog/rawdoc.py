"""Raw BSON pieces shared by the update appliers (delta, modifiers, replacement).

The appliers never decode a whole document: they walk its elements as bytes,
copy untouched elements as they are and build only the elements an update
changes.  An *element* is ``type byte + name + NUL + value bytes``; a document
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
]

NULL, OBJECT, ARRAY, BINARY, BOOL, INT32, INT64 = 0x0A, 0x03, 0x04, 0x05, 0x08, 0x10, 0x12

#: Exceptions raised by byte-level walking of truncated or corrupt BSON.
BSON_ERRORS = (struct.error, IndexError, ValueError, KeyError_)

_I32 = struct.Struct("<i")
i32 = _I32.unpack_from
_pack_i32 = _I32.pack

_INDEX_NAMES = [str(i).encode() for i in range(4096)]


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


def elements(buf: bytes, start: int = 0) -> Iterator[tuple[int, int, int, int]]:
    """Walk the document at ``buf[start]``: yield (type, element start,
    name end (the NUL), value end) for every element."""
    end = start + i32(buf, start)[0] - 1
    pos = start + 4
    while pos < end:
        t = buf[pos]
        name_end = buf.index(b"\x00", pos + 1)
        value_end = skip_value(t, buf, name_end + 1)
        if value_end > end:
            raise InvalidUpdate("BSON element runs past the end of its document")
        yield t, pos, name_end, value_end
        pos = value_end
