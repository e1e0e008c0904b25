"""Small helpers to read and edit raw BSON documents without decoding them.

Used by the head (collection options, index specs) and the oplog applier
(entry fields). Elements that are not touched are copied byte for byte, so
types and field order survive every edit.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

import bson

from backupflows.bsonorder import KeyError_, skip_value

_i32 = struct.Struct("<i").unpack_from
_pack_i32 = struct.Struct("<i").pack

EMPTY = b"\x05\x00\x00\x00\x00"


class RawBSONError(ValueError):
    """Bytes that are not a well-formed BSON document."""


def check_document(raw: bytes) -> None:
    """Raise RawBSONError unless ``raw`` has a consistent length and end byte."""
    if len(raw) < 5 or _i32(raw, 0)[0] != len(raw) or raw[-1] != 0:
        raise RawBSONError("corrupt BSON document: length does not match")


def iter_elements(raw: bytes) -> Iterator[tuple[bytes, int, int, int, int]]:
    """Yield (name, type, element start, value start, element end) of every
    top-level element of ``raw``."""
    end = len(raw) - 1
    pos = 4
    try:
        while pos < end:
            t = raw[pos]
            name_end = raw.index(b"\x00", pos + 1)
            vend = skip_value(t, raw, name_end + 1)
            if vend > end:
                raise RawBSONError("corrupt BSON document: element runs past the end")
            yield raw[pos + 1:name_end], t, pos, name_end + 1, vend
            pos = vend
    except (struct.error, IndexError, KeyError_) as exc:
        raise RawBSONError(f"corrupt BSON document: {exc}") from None


def field(raw: bytes, name: bytes) -> tuple[int, int, int] | None:
    """(type, value start, value end) of top-level field ``name``, or None."""
    for fname, t, _, vstart, vend in iter_elements(raw):
        if fname == name:
            return t, vstart, vend
    return None


def first_name(raw: bytes) -> bytes | None:
    """Name of the first field of ``raw`` (None for an empty document)."""
    if len(raw) <= 5:
        return None
    return raw[5:raw.index(b"\x00", 5)]


def build(elements: Iterable[bytes]) -> bytes:
    """A document from already encoded elements (type byte, name, value)."""
    body = b"".join(elements)
    return _pack_i32(len(body) + 5) + body + b"\x00"


def element(name: str, value: Any) -> bytes:
    """One encoded element ``name: value`` (pymongo's encoding of ``value``)."""
    return bson.encode({name: value})[4:-1]


def elements_of(raw: bytes) -> list[tuple[bytes, bytes]]:
    """[(name, encoded element)] of every top-level element."""
    return [(n, raw[s:e]) for n, _, s, _, e in iter_elements(raw)]


def without(raw: bytes, names: Iterable[bytes]) -> bytes:
    """``raw`` without the named top-level fields."""
    drop = set(names)
    return build(raw[s:e] for n, _, s, _, e in iter_elements(raw) if n not in drop)


def value(raw: bytes, name: bytes) -> Any:
    """Decoded value of top-level field ``name`` (None when absent)."""
    found = field(raw, name)
    if found is None:
        return None
    t, vstart, vend = found
    doc = build([bytes((t,)) + b"v\x00" + raw[vstart:vend]])
    return bson.decode(doc)["v"]


def subdocument(raw: bytes, name: bytes) -> bytes | None:
    """Raw bytes of the embedded document or array ``name`` (None when
    absent or of another type)."""
    found = field(raw, name)
    if found is None or found[0] not in (0x03, 0x04):
        return None
    return raw[found[1]:found[2]]


def array_items(raw_array: bytes) -> list[tuple[int, bytes]]:
    """(type, raw value bytes) of every element of a raw BSON array."""
    return [(t, raw_array[vs:ve]) for _, t, _, vs, ve in iter_elements(raw_array)]


def replace_or_append(raw: bytes, elem: bytes, name: bytes) -> bytes:
    """``raw`` with element ``elem`` (named ``name``) replacing the field of
    that name in place, or appended when absent."""
    parts = []
    done = False
    for n, _, s, _, e in iter_elements(raw):
        if n == name:
            if not done:
                parts.append(elem)
                done = True
            continue
        parts.append(raw[s:e])
    if not done:
        parts.append(elem)
    return build(parts)


def remove_and_append(raw: bytes, elem: bytes | None, name: bytes) -> bytes:
    """``raw`` without field ``name``, then ``elem`` appended (when given):
    how the server rewrites an index spec option (updateTTLSetting & co)."""
    parts = [raw[s:e] for n, _, s, _, e in iter_elements(raw) if n != name]
    if elem is not None:
        parts.append(elem)
    return build(parts)


def read_string(raw: bytes, vstart: int) -> str:
    n = _i32(raw, vstart)[0]
    return raw[vstart + 4:vstart + 3 + n].decode("utf-8")
