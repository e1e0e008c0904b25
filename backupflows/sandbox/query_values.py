"""BSON value helpers shared by the sandbox's query and update engines.

Documents are plain Python ``dict``s in BSON field order (what ``bson.decode``
returns); arrays are ``list``s.  Values keep their BSON type through decoding:
``int`` is an int32 when it fits, ``bson.int64.Int64`` an int64, ``float`` a
double, ``bson.decimal128.Decimal128`` a decimal.  Comparisons use the server's
sort order through ``backupflows.bsonorder`` (numbers compare by value across
types; other types by the canonical type ladder).
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Mapping
from typing import Any

import bson
from bson.binary import Binary
from bson.code import Code
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from backupflows import bsonorder
from backupflows.sandbox.errors import BAD_VALUE, CommandError


class _Missing:
    """Marker for a path that does not exist in a document."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

INT32_MIN, INT32_MAX = -(2 ** 31), 2 ** 31 - 1
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1

# BSON type codes (bsonspec.org) and the names $type accepts.
TYPE_NAMES = {
    "double": 1, "string": 2, "object": 3, "array": 4, "binData": 5,
    "undefined": 6, "objectId": 7, "bool": 8, "date": 9, "null": 10,
    "regex": 11, "dbPointer": 12, "javascript": 13, "symbol": 14,
    "javascriptWithScope": 15, "int": 16, "timestamp": 17, "long": 18,
    "decimal": 19, "minKey": -1, "maxKey": 127,
}
TYPE_CODE_NAMES = {code: name for name, code in TYPE_NAMES.items()}
NUMERIC_TYPES = frozenset((1, 16, 18, 19))


def bson_type(value: Any) -> int:
    """The BSON element type code of a decoded Python value."""
    if value is None:
        return 10
    if isinstance(value, bool):
        return 8
    if isinstance(value, Int64):
        return 18
    if isinstance(value, int):
        return 16 if INT32_MIN <= value <= INT32_MAX else 18
    if isinstance(value, float):
        return 1
    if isinstance(value, str):
        return 2
    if isinstance(value, DBRef):
        return 3
    if isinstance(value, Mapping):
        return 3
    if isinstance(value, (list, tuple)):
        return 4
    return _other_type(value)


def _other_type(value: Any) -> int:
    if isinstance(value, (bytes, Binary, uuid.UUID)):
        return 5
    if isinstance(value, ObjectId):
        return 7
    if isinstance(value, (datetime.datetime, bson.DatetimeMS)):
        return 9
    if isinstance(value, (Regex, re.Pattern)):
        return 11
    if isinstance(value, Code):
        return 15 if value.scope is not None else 13
    if isinstance(value, Timestamp):
        return 17
    if isinstance(value, Decimal128):
        return 19
    if isinstance(value, MinKey):
        return -1
    if isinstance(value, MaxKey):
        return 127
    raise CommandError(BAD_VALUE, f"unsupported value of type {type(value).__name__}")


def type_name(value: Any) -> str:
    return TYPE_CODE_NAMES.get(bson_type(value), "unknown")


def is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, Decimal128))


def is_doc(value: Any) -> bool:
    return isinstance(value, Mapping)


def value_key(value: Any) -> bytes:
    """Order-preserving key in server sort order (see backupflows.bsonorder)."""
    if value is MISSING:
        value = None
    if isinstance(value, tuple):
        value = list(value)
    return bsonorder.value_key(value)


def compare(a: Any, b: Any) -> int:
    """-1, 0 or 1 as the server orders the two values (MISSING sorts as null)."""
    ka, kb = value_key(a), value_key(b)
    return (ka > kb) - (ka < kb)


def values_equal(a: Any, b: Any) -> bool:
    """Server equality: same canonical type and same value (1 == 1.0 == Int64(1))."""
    return value_key(a) == value_key(b)


def encode_value(value: Any) -> bytes:
    """The raw BSON bytes of one element named "" holding ``value``."""
    return bson.encode({"": value})


def binary_equal(a: Any, b: Any) -> bool:
    """BSONElement::binaryEqualValues: same BSON type and identical value bytes."""
    if bson_type(a) != bson_type(b):
        return False
    return encode_value(a) == encode_value(b)


def value_size(value: Any) -> int:
    """BSONElement::valuesize(): the size of the value part of an element."""
    return len(encode_value(value)) - 7


def doc_size(doc: Mapping) -> int:
    return len(bson.encode(doc))


def copy_value(value: Any) -> Any:
    """Deep copy of documents and arrays into plain dicts and lists."""
    if isinstance(value, DBRef):
        return value
    if isinstance(value, Mapping):
        return {k: copy_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [copy_value(v) for v in value]
    return value


def parse_index(part: str) -> int | None:
    """An array index path component (str::parseUnsignedBase10Integer)."""
    if part and part.isascii() and part.isdigit():
        return int(part)
    return None


def truthy(value: Any) -> bool:
    """Aggregation truthiness: false, null, missing, 0 and undefined are false."""
    if value is None or value is MISSING or value is False:
        return False
    if is_number(value):
        return _number_as_float(value) != 0
    return True


def _number_as_float(value: Any) -> float:
    if isinstance(value, Decimal128):
        dec = value.to_decimal()
        return 0.0 if dec.is_zero() else 1.0 if not dec.is_nan() else float("nan")
    return float(value)


def render(value: Any) -> str:
    """A short mongo-shell-like rendering of a value, for error messages."""
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k}: {render(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, (list, tuple)):
        return "[ " + ", ".join(render(v) for v in value) + " ]" if value else "[]"
    if isinstance(value, str):
        return '"' + value + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_element(name: str, value: Any) -> str:
    """BSONElement::toString(): ``name: value``."""
    return f"{name}: {render(value)}"


def to_regex(value: Any) -> re.Pattern:
    """A compiled Python pattern for a BSON regex (or an already-compiled one)."""
    if isinstance(value, re.Pattern):
        return value
    if isinstance(value, Regex):
        return compile_regex(value.pattern, regex_flags(value))
    raise CommandError(BAD_VALUE, "$regex has to be a string")


def regex_flags(value: Regex) -> str:
    """The option letters of a BSON regex (pymongo keeps them as re flags)."""
    flags = value.flags
    if isinstance(flags, str):
        return flags
    out = ""
    for char, bit in (("i", re.IGNORECASE), ("m", re.MULTILINE), ("s", re.DOTALL),
                      ("x", re.VERBOSE)):
        if flags & bit:
            out += char
    return out


_REGEX_CACHE: dict[tuple[str, str], re.Pattern] = {}


def compile_regex(pattern: str, options: str = "") -> re.Pattern:
    key = (pattern, options)
    cached = _REGEX_CACHE.get(key)
    if cached is not None:
        return cached
    flags = 0
    for char in options:
        flag = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL,
                "x": re.VERBOSE, "u": 0}.get(char)
        if flag is None:
            raise CommandError(51108, f"invalid flag in regex options: {char}")
        flags |= flag
    try:
        compiled = re.compile(pattern, flags)
    except re.error as exc:
        raise CommandError(51091, f"Regular expression is invalid: {exc}") from None
    if len(_REGEX_CACHE) < 1024:
        _REGEX_CACHE[key] = compiled
    return compiled
