"""The fast path of ``$v: 2`` delta updates: through pymongo's C codec.

``apply_delta_codec(raw_doc, raw_diff)`` decodes the document and the diff
with the C decoder, applies the diff to the decoded dict (touching only the
fields the diff names) and encodes the result with the C encoder: about twice
as fast as the Python walk over raw BSON in ``delta``, which stays the
reference and the fallback.

It is exact only where the codec is lossless, so it vouches for its result or
returns None (the caller then takes the raw walk, which also reports every
error with its message):

- *fidelity guard*: the document and the diff must each re-encode to their
  own bytes.  That rules out, with one comparison, everything the codec does
  not round-trip: duplicate field names, an ``_id`` that is not first,
  DBRef-shaped sub-documents whose ``$ref``/``$id`` come in another order,
  Symbol, Undefined, DBPointer, regex flags out of order, booleans other than
  0/1, array elements not named 0, 1, ..., invalid UTF-8.  Since BSON
  encoding is compositional, every value of the result is then the same
  bytes the raw walk would copy;
- the diff must be well formed in the plainest way: any doubt (a malformed
  diff, a top-level ``_id`` named by the diff, which the encoder would move
  first, a sub-diff on a value decoded as DBRef, a binary patch involving the
  old subtype 2) returns None, never an error and never a different result.

The property tests run both paths on the same inputs and compare bytes.
"""

from __future__ import annotations

from typing import Any

import bson
from bson.binary import Binary, UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.dbref import DBRef
from bson.int64 import Int64

__all__ = ["apply_delta_codec"]

# DATETIME_AUTO: datetime objects (made in C) where they can hold the value,
# DatetimeMS beyond; both encode back to the same milliseconds (DATETIME_MS
# would build every date through DatetimeMS.__init__, in Python).
_OPTS = CodecOptions(uuid_representation=UuidRepresentation.UNSPECIFIED,
                     datetime_conversion=DatetimeConversion.DATETIME_AUTO)
_decode = bson._bson_to_dict  # the C functions behind bson.decode / bson.encode
_encode = bson._dict_to_bson

_ORDER = {"d": 1, "u": 2, "i": 3, "b": 4, "s": 5}
_S = 5
_MAX_ARRAY_INDEX = 16 * 1024 * 1024  # as in delta


class _Unsure(Exception):
    """The fast path cannot vouch for the result: take the raw walk."""


def apply_delta_codec(raw_doc: bytes, raw_diff: bytes, doc_checked: bool = False
                      ) -> bytes | None:
    """The post-image of ``raw_doc`` under the raw document diff ``raw_diff``,
    or None when only the raw walk can tell (see the module docstring).

    ``doc_checked``: ``raw_doc`` is known to pass the fidelity guard, so its
    re-encoding is skipped. Every result of this function passes it (its
    values are the guarded values of the document and the diff, or new
    nulls, lists and documents, and it was written by the encoder itself), so
    a caller may pass True for a document it got from here (``canonical``).
    """
    try:
        diff = _decode(raw_diff, _OPTS)
        if _encode(diff, False, _OPTS) != raw_diff:
            return None
        doc = _decode(raw_doc, _OPTS)
        if not doc_checked and _encode(doc, False, _OPTS) != raw_doc:
            return None
        if "_id" in _apply_doc(doc, diff):
            return None  # the encoder would put a re-added _id first
        return _encode(doc, False, _OPTS)
    except _Unsure:
        return None
    except Exception:  # noqa: BLE001 - any codec complaint: the raw walk decides
        return None


# Diff and document are walked once: the diff is validated while it is applied
# (a failure discards the decoded copy), and a sub-diff of a field that is
# absent or of the other kind is validated on an empty container.

def _apply_doc(doc: dict, diff: Any) -> set[str]:
    """Apply the document diff ``diff`` to ``doc`` in place (as
    ``delta._apply_document``): deletes and inserts leave their place,
    updates of present fields keep it, updates of absent fields and then
    inserts are appended in diff order. Returns the names the diff touches."""
    if type(diff) is not dict or not diff:
        raise _Unsure
    seen: set[str] = set()
    prev = 0
    for section, body in diff.items():
        order = _SECTIONS.get(section) or _ORDER.get(section[:1])
        if order is None or order < prev or (order == prev and order != _S):
            raise _Unsure
        prev = order
        if order == _S:
            name = section[1:]
            if name in seen:
                raise _Unsure
            seen.add(name)
            if name in doc:
                doc[name] = _sub(doc[name], body)
            else:
                _sub(_ABSENT, body)
            continue
        if type(body) is not dict:
            raise _Unsure
        n = len(seen)
        seen.update(body)
        if len(seen) != n + len(body):
            raise _Unsure  # a name in two sections
        if order == 2:
            doc.update(body)  # in place when present, else appended
        elif order == 3:
            for name, value in body.items():
                doc.pop(name, None)
                doc[name] = value
        elif order == 1:
            for name in body:
                doc.pop(name, None)
        else:
            for name, patch in body.items():
                patch = _parse_patch(patch)
                if name in doc:
                    doc[name] = _patched(doc[name], patch)
    return seen


_SECTIONS = {"d": 1, "u": 2, "i": 3, "b": 4}


class _Absent:
    pass


_ABSENT = _Absent()


def _sub(value: Any, sub: Any) -> Any:
    """``value`` under the sub-diff ``sub``: a matching container is changed
    in place; another kind becomes null (the server's choice); a DBRef (an
    object to BSON) is beyond the fast path."""
    if type(sub) is not dict or not sub:
        raise _Unsure
    t = type(value)
    if next(iter(sub)) == "a":
        if t is list:
            return _apply_array(value, sub)
        _apply_array([], sub)
    else:
        if t is dict:
            _apply_doc(value, sub)
            return value
        if t is DBRef:
            raise _Unsure
        _apply_doc({}, sub)
    return None


def _parse_patch(patch: Any) -> tuple[int, bytes]:
    if type(patch) is not dict or len(patch) != 2:
        raise _Unsure
    offset, data = patch.get("o"), patch.get("d")
    if type(offset) not in (int, Int64) or offset < 0 or not isinstance(data, bytes):
        raise _Unsure
    if isinstance(data, Binary) and data.subtype == 2:
        raise _Unsure
    return int(offset), bytes(data)


def _patched(value: Any, patch: tuple[int, bytes]) -> Any:
    """Keep the first ``o`` bytes of BinData, append ``d`` (same subtype);
    anything else, or an offset past the end, is unchanged."""
    offset, data = patch
    if not isinstance(value, bytes) or offset > len(value):
        return value
    if isinstance(value, Binary):
        if value.subtype == 2:
            raise _Unsure
        if value.subtype != 0:
            return Binary(bytes(value[:offset]) + data, value.subtype)
    return value[:offset] + data


def _apply_array(arr: list, sub: dict) -> list:
    """Apply an array diff in place (as ``delta._apply_array``): ``l``
    truncates or pads with null, ``u<i>``/``s<i>`` (ascending, below ``l``)
    change elements in place or append past the end, gaps padded with null."""
    items = iter(sub.items())
    if next(items)[1] is not True:
        raise _Unsure
    new_len = None
    limit = _MAX_ARRAY_INDEX
    last = -1
    for name, value in items:
        if name == "l" and last == -1 and new_len is None:
            if type(value) is not int or not 0 <= value <= _MAX_ARRAY_INDEX:
                raise _Unsure
            new_len = limit = value
            if new_len < len(arr):
                del arr[new_len:]
            continue
        key = _ARRAY_KEYS.get(name) or _array_key(name)
        idx = key[1]
        if idx <= last or idx >= limit:
            raise _Unsure
        last = idx
        if idx < len(arr):
            arr[idx] = value if key[0] else _sub(arr[idx], value)
        else:
            if idx > len(arr):
                arr.extend([None] * (idx - len(arr)))
            arr.append(value if key[0] else _sub(_ABSENT, value))
    if new_len is not None and len(arr) < new_len:
        arr.extend([None] * (new_len - len(arr)))
    return arr


def _array_key(name: str) -> tuple[bool, int]:
    """(is an update, index) of an array diff entry ``u<index>``/``s<index>``."""
    digits = name[1:]
    if not (digits.isascii() and digits.isdigit()) or name[0] not in "us":
        raise _Unsure
    return name[0] == "u", int(digits)


_ARRAY_KEYS = {f"{letter}{i}": (letter == "u", i) for letter in "us" for i in range(1024)}
