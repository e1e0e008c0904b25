"""Order-preserving binary keys for BSON values, in the server's sort order.

``encode_element`` turns one BSON value into bytes whose lexicographic order is
exactly the order in which MongoDB sorts the values (simple collation):

    MinKey < Undefined < Null < numbers < String/Symbol < Object < Array
    < BinData < ObjectId < Bool < Date < Timestamp < Regex < DBPointer
    < Code < CodeWScope < MaxKey

Numbers of every type (int32, int64, double, decimal128) compare by value, so
``1``, ``1L``, ``1.0`` and ``Decimal128("1.00")`` give the same key; NaN is the
lowest number and ``-0 == 0``.  Objects compare element by element (canonical
type, field name, value), then by length; arrays element by element; BinData by
length, subtype, bytes; Date as signed and Timestamp as unsigned integers.

Keys are built from raw BSON bytes, never from decoded documents, and every
encoding is prefix-free, so a compound key is the concatenation of its parts.
"""

from __future__ import annotations

import math
import struct
from decimal import Decimal
from typing import Any

import bson
from bson.decimal128 import Decimal128

# Canonical type bytes (greater than the 0x00 end marker of objects/arrays).
MINKEY, UNDEFINED, NULL, NUMBER, STRING = 0x01, 0x02, 0x03, 0x0A, 0x0F
OBJECT, ARRAY, BINDATA, OBJECTID, BOOL = 0x14, 0x19, 0x1E, 0x23, 0x28
DATE, TIMESTAMP, REGEX, DBPOINTER, CODE, CODEWSCOPE, MAXKEY = (
    0x2D, 0x2F, 0x32, 0x37, 0x3C, 0x41, 0x7F)

_CANONICAL = {
    0x01: NUMBER, 0x02: STRING, 0x03: OBJECT, 0x04: ARRAY, 0x05: BINDATA,
    0x06: UNDEFINED, 0x07: OBJECTID, 0x08: BOOL, 0x09: DATE, 0x0A: NULL,
    0x0B: REGEX, 0x0C: DBPOINTER, 0x0D: CODE, 0x0E: STRING, 0x0F: CODEWSCOPE,
    0x10: NUMBER, 0x11: TIMESTAMP, 0x12: NUMBER, 0x13: NUMBER,
    0xFF: MINKEY, 0x7F: MAXKEY,
}

# Number classes (the byte after NUMBER).
_NAN, _NEG_INF, _NEG, _ZERO, _POS, _POS_INF = 0, 1, 2, 3, 4, 5
_DIGITS = bytes.maketrans(b"0123456789", bytes(range(1, 11)))
_INVERT = bytes(255 - b for b in range(256))

_i32 = struct.Struct("<i").unpack_from
_i64 = struct.Struct("<q").unpack_from
_u64 = struct.Struct("<Q").unpack_from
_f64 = struct.Struct("<d").unpack_from
_be32 = struct.Struct(">I").pack
_be64 = struct.Struct(">Q").pack
_be16 = struct.Struct(">H").pack


class KeyError_(ValueError):
    """Raised for bytes that are not valid BSON."""


def _magnitude(digits: str, exp10: int) -> bytes:
    """Key body of a positive number ``0.<digits> * 10**exp10`` (digits without
    trailing zeros, first digit non-zero)."""
    return _be16(exp10 + 0x8000) + digits.encode().translate(_DIGITS) + b"\x00"


def _signed(negative: bool, body: bytes) -> bytes:
    if negative:
        return bytes((NUMBER, _NEG)) + body.translate(_INVERT)
    return bytes((NUMBER, _POS)) + body


def number_key_int(n: int) -> bytes:
    if n == 0:
        return bytes((NUMBER, _ZERO))
    s = str(abs(n))
    return _signed(n < 0, _magnitude(s.rstrip("0"), len(s)))


def _number_key_decimal(d: Decimal) -> bytes:
    if d.is_nan():
        return bytes((NUMBER, _NAN))
    if d.is_infinite():
        return bytes((NUMBER, _NEG_INF if d < 0 else _POS_INF))
    if d.is_zero():
        return bytes((NUMBER, _ZERO))
    sign, digits, exponent = d.as_tuple()
    s = "".join(map(str, digits)).lstrip("0")
    stripped = s.rstrip("0")
    return _signed(bool(sign), _magnitude(stripped, len(s) + int(exponent)))


def number_key_float(x: float) -> bytes:
    if x != x:
        return bytes((NUMBER, _NAN))
    if x.is_integer():
        if math.isinf(x):
            return bytes((NUMBER, _NEG_INF if x < 0 else _POS_INF))
        return number_key_int(int(x))
    return _number_key_decimal(Decimal(x))


def _cstring_end(buf: bytes, pos: int) -> int:
    end = buf.index(b"\x00", pos)
    return end


def _escape(raw: bytes) -> bytes:
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def _encode_doc(buf: bytes, pos: int, out: bytearray, with_names: bool) -> int:
    """Append the key of the document/array at ``pos``; return its end offset."""
    end = pos + _i32(buf, pos)[0]
    pos += 4
    while pos < end - 1:
        t = buf[pos]
        name_end = buf.index(b"\x00", pos + 1)
        if with_names:
            out.append(_CANONICAL_OR_FAIL(t))
            out += buf[pos + 1:name_end + 1]
            pos = _encode_value(t, buf, name_end + 1, out, type_written=True)
        else:
            pos = _encode_value(t, buf, name_end + 1, out)
    out.append(0)
    return end


def _CANONICAL_OR_FAIL(t: int) -> int:  # noqa: N802 - small helper
    try:
        return _CANONICAL[t]
    except KeyError:
        raise KeyError_(f"unknown BSON type 0x{t:02x}") from None


def _encode_value(t: int, buf: bytes, pos: int, out: bytearray,
                  type_written: bool = False) -> int:
    """Append the key of the value of type ``t`` at ``pos``; return its end."""
    if t == 0x07:  # ObjectId: the common _id
        if not type_written:
            out.append(OBJECTID)
        out += buf[pos:pos + 12]
        return pos + 12
    if t in (0x10, 0x12, 0x01, 0x13):
        if t == 0x10:
            key, size = number_key_int(_i32(buf, pos)[0]), 4
        elif t == 0x12:
            key, size = number_key_int(_i64(buf, pos)[0]), 8
        elif t == 0x01:
            key, size = number_key_float(_f64(buf, pos)[0]), 8
        else:
            dec = Decimal128.from_bid(bytes(buf[pos:pos + 16])).to_decimal()
            key, size = _number_key_decimal(dec), 16
        out += key[1:] if type_written else key
        return pos + size
    if not type_written:
        out.append(_CANONICAL_OR_FAIL(t))
    if t in (0x02, 0x0E, 0x0D):  # string, symbol, code
        n = _i32(buf, pos)[0]
        out += _escape(bytes(buf[pos + 4:pos + 3 + n]))
        return pos + 4 + n
    if t == 0x03:
        return _encode_doc(buf, pos, out, with_names=True)
    if t == 0x04:
        return _encode_doc(buf, pos, out, with_names=False)
    if t == 0x05:
        n = _i32(buf, pos)[0]
        out += _be32(n)
        out += buf[pos + 4:pos + 5 + n]
        return pos + 5 + n
    if t == 0x08:
        out.append(1 if buf[pos] else 0)
        return pos + 1
    if t == 0x09:
        out += _be64(_i64(buf, pos)[0] + (1 << 63))
        return pos + 8
    if t == 0x11:
        out += _be64(_u64(buf, pos)[0])
        return pos + 8
    if t in (0x0A, 0x06, 0xFF, 0x7F):
        return pos
    if t == 0x0B:
        p_end = _cstring_end(buf, pos)
        f_end = _cstring_end(buf, p_end + 1)
        out += buf[pos:f_end + 1]
        return f_end + 1
    if t == 0x0C:
        n = _i32(buf, pos)[0]
        size = 4 + n + 12
        out += _be32(size)
        out += buf[pos:pos + size]
        return pos + size
    if t == 0x0F:
        total = _i32(buf, pos)[0]
        n = _i32(buf, pos + 4)[0]
        out += _escape(bytes(buf[pos + 8:pos + 7 + n]))
        _encode_doc(buf, pos + 8 + n, out, with_names=True)
        return pos + total
    raise KeyError_(f"unknown BSON type 0x{t:02x}")


def encode_element(t: int, buf: bytes, pos: int) -> tuple[bytes, int]:
    """Key of the BSON value of type ``t`` starting at ``buf[pos]``, and the
    offset just past the value."""
    out = bytearray()
    try:
        end = _encode_value(t, buf, pos, out)
    except (struct.error, IndexError, ValueError) as exc:
        if isinstance(exc, KeyError_):
            raise
        raise KeyError_(f"truncated or corrupt BSON value: {exc}") from None
    return bytes(out), end


def find_field(raw: bytes, name: bytes) -> tuple[int, int] | None:
    """Locate top-level field ``name`` in a raw BSON document: (type, value
    offset), or None."""
    end = _i32(raw, 0)[0] - 1
    pos = 4
    while pos < end:
        t = raw[pos]
        name_end = raw.index(b"\x00", pos + 1)
        if raw[pos + 1:name_end] == name:
            return t, name_end + 1
        pos = skip_value(t, raw, name_end + 1)
    return None


_FIXED = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x06: 0, 0x10: 4,
          0x11: 8, 0x12: 8, 0x13: 16, 0xFF: 0, 0x7F: 0}


def skip_value(t: int, buf: bytes, pos: int) -> int:
    """Offset just past the value of type ``t`` at ``pos``."""
    size = _FIXED.get(t)
    if size is not None:
        return pos + size
    if t in (0x02, 0x0D, 0x0E):
        return pos + 4 + _i32(buf, pos)[0]
    if t in (0x03, 0x04, 0x0F):
        return pos + _i32(buf, pos)[0]
    if t == 0x05:
        return pos + 5 + _i32(buf, pos)[0]
    if t == 0x0B:
        return _cstring_end(buf, _cstring_end(buf, pos) + 1) + 1
    if t == 0x0C:
        return pos + 4 + _i32(buf, pos)[0] + 12
    raise KeyError_(f"unknown BSON type 0x{t:02x}")


def id_key(raw_doc: bytes) -> bytes:
    """Key of the ``_id`` of a raw BSON document (KeyError_ if it has none)."""
    try:
        if _i32(raw_doc, 0)[0] != len(raw_doc) or raw_doc[-1] != 0:
            raise KeyError_("corrupt BSON document: length does not match")
        # Fast path: _id is almost always the first field.
        if raw_doc[5:9] == b"_id\x00":
            key, end = encode_element(raw_doc[4], raw_doc, 9)
        else:
            found = find_field(raw_doc, b"_id")
            if found is None:
                raise KeyError_("document has no _id")
            key, end = encode_element(found[0], raw_doc, found[1])
    except (struct.error, IndexError, ValueError) as exc:
        if isinstance(exc, KeyError_):
            raise
        raise KeyError_(f"corrupt BSON document: {exc}") from None
    if end > len(raw_doc) - 1:
        raise KeyError_("corrupt BSON document: _id runs past the end")
    return key


def raw_id(raw_doc: bytes) -> bytes:
    """The ``_id`` of a raw document as the raw BSON document ``{_id: …}``."""
    found = find_field(raw_doc, b"_id")
    if found is None:
        raise KeyError_("document has no _id")
    t, pos = found
    end = skip_value(t, raw_doc, pos)
    body = bytes((t,)) + b"_id\x00" + bytes(raw_doc[pos:end])
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


_CODEC = bson.CodecOptions(uuid_representation=bson.binary.UuidRepresentation.STANDARD)


def value_key(value: Any) -> bytes:
    """Key of a Python value (as pymongo's bson module encodes it; a
    ``uuid.UUID`` is the standard subtype-4 binary)."""
    raw = bson.encode({"": value}, codec_options=_CODEC)
    return encode_element(raw[4], raw, 6)[0]


def compare(a: Any, b: Any) -> int:
    """Compare two Python values the way the server sorts them (-1, 0, 1)."""
    ka, kb = value_key(a), value_key(b)
    return (ka > kb) - (ka < kb)
