"""Canonical Extended JSON v2, byte for byte as mongo-tools writes it.

mongodump 100.x writes ``<coll>.metadata.json`` (and the archive prelude's
``metadata`` string) with the Go driver's ``bson.MarshalExtJSON(meta,
canonical=true, escapeHTML=false)``. ``bson.json_util`` in canonical mode
differs from it in small ways (spaces after ``:`` and ``,``, ``\\uXXXX`` for
non-ASCII text, Python's ``repr`` for doubles), so this module reproduces the
Go writer (``bsonrw/extjson_writer.go``):

- no whitespace; keys and strings escaped like Go's ``encoding/json`` with
  HTML escaping off (``"``, ``\\``, control characters, U+2028/U+2029);
  other characters are written as UTF-8;
- int32 ``{"$numberInt":"1"}``, int64 ``{"$numberLong":"1"}``, double
  ``{"$numberDouble":...}`` formatted as Go's ``strconv.FormatFloat(f, 'G',
  -1, 64)`` plus ``.0`` when the text has neither ``.`` nor ``E`` (so
  ``1.0``, ``0.5``, ``1E+06``, ``1.5E-07``);
- dates ``{"$date":{"$numberLong":"ms"}}``, binary with a two-digit hex
  ``subType``, regular expressions with their options sorted.

Go writes object keys without escaping them; here keys are escaped like
strings (identical output for every key that needs no escaping).
"""

from __future__ import annotations

import base64
import datetime
import math
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS, _datetime_to_millis
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "\b": "\\b", "\f": "\\f", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_NEEDS_ESCAPE = re.compile('["\\\\\x00-\x1f\u2028\u2029]')


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group(0)
    return _ESCAPES.get(ch) or f"\\u00{ord(ch):02x}"


def quote(text: str) -> str:
    """A JSON string literal as Go's extended JSON writer spells it."""
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, text) + '"'


def go_format_double(value: float) -> str:
    """Go's ``strconv.FormatFloat(value, 'G', -1, 64)`` (shortest digits)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    _, digits, exponent = Decimal(repr(abs(value))).as_tuple()
    text = "".join(map(str, digits)).lstrip("0")
    stripped = text.rstrip("0")
    exponent += len(text) - len(stripped)
    nd = len(stripped)
    dp = nd + int(exponent)  # value = 0.<digits> * 10**dp
    if dp - 1 < -4 or dp - 1 >= 6:
        mantissa = stripped[0] + ("." + stripped[1:] if nd > 1 else "")
        exp = dp - 1
        return f"{sign}{mantissa}E{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{stripped}"
    if dp >= nd:
        return sign + stripped + "0" * (dp - nd)
    return f"{sign}{stripped[:dp]}.{stripped[dp:]}"


def format_double(value: float) -> str:
    """The ``$numberDouble`` text of mongo-tools (Go driver ``formatDouble``)."""
    text = go_format_double(value)
    if not math.isfinite(value) or "E" in text or "." in text:
        return text
    return text + ".0"


def dumps(value: Any) -> str:
    """Canonical Extended JSON text of a document (a mapping), Go style."""
    out: list[str] = []
    _write(value, out)
    return "".join(out)


def _write(value: Any, out: list[str]) -> None:  # noqa: C901 - one branch per BSON type
    if isinstance(value, Mapping):
        _write_document(value, out)
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, Code):  # a str subclass
        out.append(_code_json(value))
    elif isinstance(value, str):
        out.append(quote(value))
    elif value is None:
        out.append("null")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, Int64):
        out.append(f'{{"$numberLong":"{int(value)}"}}')
    elif isinstance(value, int):
        out.append(_int_json(value))
    elif isinstance(value, float):
        out.append(f'{{"$numberDouble":"{format_double(value)}"}}')
    else:
        out.append(_special_json(value))


def _write_document(doc: Mapping[str, Any], out: list[str]) -> None:
    out.append("{")
    for i, (key, item) in enumerate(doc.items()):
        if i:
            out.append(",")
        out.append(quote(str(key)))
        out.append(":")
        _write(item, out)
    out.append("}")


def _int_json(value: int) -> str:
    if _INT32_MIN <= value <= _INT32_MAX:
        return f'{{"$numberInt":"{value}"}}'
    if _INT64_MIN <= value <= _INT64_MAX:
        return f'{{"$numberLong":"{value}"}}'
    raise ValueError(f"integer {value} does not fit in a BSON int64")


def _binary_json(data: bytes, subtype: int) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return f'{{"$binary":{{"base64":"{b64}","subType":"{subtype:02x}"}}}}'


def _special_json(value: Any) -> str:  # noqa: C901 - one branch per BSON type
    if isinstance(value, ObjectId):
        return f'{{"$oid":"{value}"}}'
    if isinstance(value, Decimal128):
        return f'{{"$numberDecimal":"{value}"}}'
    if isinstance(value, Binary):
        return _binary_json(bytes(value), value.subtype)
    if isinstance(value, bytes):
        return _binary_json(value, 0)
    if isinstance(value, uuid.UUID):
        return _binary_json(value.bytes, 4)
    if isinstance(value, DatetimeMS):
        return f'{{"$date":{{"$numberLong":"{int(value)}"}}}}'
    if isinstance(value, datetime.datetime):
        return f'{{"$date":{{"$numberLong":"{_datetime_to_millis(value)}"}}}}'
    if isinstance(value, Timestamp):
        return f'{{"$timestamp":{{"t":{value.time},"i":{value.inc}}}}}'
    if isinstance(value, Regex | re.Pattern):
        return _regex_json(value)
    if isinstance(value, MinKey):
        return '{"$minKey":1}'
    if isinstance(value, MaxKey):
        return '{"$maxKey":1}'
    if isinstance(value, DBRef):
        return dumps(value.as_doc())
    raise TypeError(f"cannot write {type(value).__name__} as Extended JSON")


def _code_json(value: Code) -> str:
    if value.scope is None:
        return f'{{"$code":{quote(str(value))}}}'
    return f'{{"$code":{quote(str(value))},"$scope":{dumps(value.scope)}}}'


def _regex_json(value: Regex[Any] | re.Pattern[Any]) -> str:
    regex = value if isinstance(value, Regex) else Regex.from_native(value)
    flags = regex.flags
    if isinstance(flags, int):
        flags = "".join(c for c, bit in _REGEX_FLAGS if flags & bit)
    pattern = regex.pattern if isinstance(regex.pattern, str) else regex.pattern.decode()
    options = "".join(sorted(flags))
    return f'{{"$regularExpression":{{"pattern":{quote(pattern)},"options":"{options}"}}}}'


_REGEX_FLAGS = ((("i", re.IGNORECASE)), ("l", re.LOCALE), ("m", re.MULTILINE),
                ("s", re.DOTALL), ("u", re.UNICODE), ("x", re.VERBOSE))
