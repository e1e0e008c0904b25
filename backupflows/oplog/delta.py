"""Applying ``$v: 2`` delta updates (MongoDB 5.0+) to raw BSON documents.

The authority is the server: ``src/mongo/db/update/document_diff_serialization.cpp``
(what a well-formed diff is) and ``document_diff_applier.cpp`` (how it is
applied), summarised in ``shared/reference/oplog.md``.  ``apply_delta`` first
tries the C-codec path of ``deltadict`` (exact where it vouches for its result,
about twice as fast); otherwise, and for every error message, a diff is parsed
(and fully validated) into small tables, then applied in one walk over the
document's raw elements: untouched runs of elements are copied as bytes, and
new values are the diff's own element bytes, so types (int32/int64/double...)
and field order come out exactly as the server writes them.

Differences from the server, on purpose (each is noted where it is made):
- the whole diff is validated up front, including sub-diffs of fields the
  document does not have (the server checks those lazily, or never);
- ``i`` always checks whether the field exists (the server may skip the check
  for insert-only diffs, ``mustCheckExistenceForInsertOperations=false``, and
  would then write a duplicate field when a diff is applied twice);
- array indexes must be strictly ascending and below ``l``: the server does not
  check, and loops or fails an invariant on such diffs;
- a ``b`` patch of a field that is not BinData leaves it unchanged (the 8.0
  applier source was not available to check; the reference only says that an
  offset past the end leaves the value unchanged).
As in the server, a section is recognised by the first letter of its name
(``{update: {...}}`` is read as a ``u`` section).
"""

from __future__ import annotations

from typing import Any

from backupflows.bsonorder import skip_value
from backupflows.oplog.deltadict import apply_delta_codec
from backupflows.oplog.rawdoc import (
    ARRAY,
    BINARY,
    BOOL,
    BSON_ERRORS,
    INT32,
    INT64,
    NULL,
    OBJECT,
    VALUE_SIZE,
    InvalidUpdate,
    check_document,
    document,
    i32,
    index_name,
    raw_of,
)
from backupflows.oplog.rawdoc import value_end as value_end_of

__all__ = ["apply_delta", "apply_delta_raw", "validate_delta", "InvalidUpdate"]

# Kinds of field modification in a parsed diff.
_DELETE, _UPDATE, _INSERT, _BINARY, _SUBDOC, _SUBARR = range(6)

# Section letters and their required order (document_diff_serialization.cpp,
# DocumentDiffReader: d=1, u=2, i=3, b=4 (8.0), s=5; a letter may not repeat
# except the sub-diff prefix "s").
_SECTION_ORDER = {ord("d"): 1, ord("u"): 2, ord("i"): 3, ord("b"): 4, ord("s"): 5}
_S = 5

# Largest array index / new length accepted: a BSON document is at most 16 MiB,
# and every array element takes at least 3 bytes, so anything larger cannot be
# a real diff (and would make us pad gigabytes of nulls).
_MAX_ARRAY_INDEX = 16 * 1024 * 1024


class _DocDiff:
    """A parsed document diff: ``mods`` maps a field name to (kind, payload);
    ``appends`` lists the (name, element bytes) of every u then i entry."""

    __slots__ = ("mods", "appends")

    def __init__(self) -> None:
        self.mods: dict[bytes, tuple[int, Any]] = {}
        self.appends: list[tuple[bytes, bytes]] = []

    def add(self, name: bytes, kind: int, payload: Any) -> None:
        # document_diff_applier.cpp, DocumentDiffTables::safeInsert (4728000).
        if name in self.mods:
            raise InvalidUpdate(f"duplicate field name in diff: {_show(name)}")
        self.mods[name] = (kind, payload)


class _ArrDiff:
    """A parsed array diff: optional new length and ascending (index, kind,
    payload) modifications."""

    __slots__ = ("new_len", "mods")

    def __init__(self, new_len: int | None, mods: list[tuple[int, int, Any]]) -> None:
        self.new_len = new_len
        self.mods = mods


def _show(name: bytes) -> str:
    return repr(name.decode("utf-8", "replace"))


# --------------------------------------------------------------------- parsing

def _parse_sub(buf: bytes, start: int, where: bytes) -> tuple[int, Any]:
    """Parse the sub-diff document at ``start``: an array diff if its first
    field is ``a`` (identifyType), else a document diff.  ``where`` is the
    dotted path of the field, for error messages."""
    if i32(buf, start)[0] <= 5:
        raise InvalidUpdate(f"Expected diff to be non-empty (sub-diff of {_show(where)})")  # 4770500
    if buf[start + 5:start + 7] == b"a\x00":
        return _SUBARR, _parse_array(buf, start, where)
    return _SUBDOC, _parse_document(buf, start)


def _parse_document(buf: bytes, start: int) -> _DocDiff:
    """Parse and validate a document diff (DocumentDiffReader)."""
    end = start + i32(buf, start)[0] - 1
    pos = start + 4
    if pos >= end:
        raise InvalidUpdate("Expected diff to be non-empty")  # 4770500
    diff = _DocDiff()
    prev = 0
    while pos < end:
        t = buf[pos]
        name_end = buf.index(b"\x00", pos + 1)
        value_end = value_end_of(t, buf, name_end + 1)
        prev = _parse_section(buf, pos, name_end, t, prev, diff)
        pos = value_end
    return diff


def _parse_section(buf: bytes, pos: int, name_end: int, t: int, prev: int,
                   diff: _DocDiff) -> int:
    """Parse one section element of a document diff; return its order."""
    if name_end == pos + 1:
        raise InvalidUpdate("Expected sections field names in diff to be non-empty")  # 4770505
    letter = buf[pos + 1]
    order = _SECTION_ORDER.get(letter)
    if order is None or order < prev or (order == prev and order != _S):
        if prev == _S:  # after the first sub-diff only sub-diffs may follow (4770514)
            raise InvalidUpdate("Did not expect more sections in diff but found one: "
                                + _show(buf[pos + 1:name_end]))
        raise InvalidUpdate(f"Unexpected section: {chr(letter)!r} in document diff")  # 4770503
    if t != OBJECT:  # checkSection (4770507); sub-diffs must be objects (470510)
        raise InvalidUpdate(f"Expected {chr(letter)!r} section of diff to be an object, "
                            f"got BSON type 0x{t:02x} for {_show(buf[pos + 1:name_end])}")
    vs = name_end + 1
    if order == _S:
        name = buf[pos + 2:name_end]
        diff.add(name, *_parse_sub(buf, vs, name))
    elif order == 4:
        _parse_binary_section(buf, vs, diff)
    else:
        _parse_value_section(buf, vs, order, diff)
    return order


def _parse_value_section(buf: bytes, start: int, order: int, diff: _DocDiff) -> None:
    """A d, u or i section: {field: false} / {field: value}."""
    end = start + i32(buf, start)[0] - 1
    pos = start + 4
    kind = (_DELETE, _UPDATE, _INSERT)[order - 1]
    mods, appends = diff.mods, diff.appends
    while pos < end:
        name_end = buf.index(0, pos + 1)
        value_end = value_end_of(buf[pos], buf, name_end + 1)
        name = buf[pos + 1:name_end]
        if name in mods:
            diff.add(name, kind, None)  # raises: duplicate field name
        if kind == _DELETE:
            mods[name] = (kind, None)
        else:
            element = buf[pos:value_end]
            mods[name] = (kind, element)
            appends.append((name, element))
        pos = value_end


def _parse_binary_section(buf: bytes, start: int, diff: _DocDiff) -> None:
    """The ``b`` section (8.0 time-series): {field: {o: offset, d: BinData}}."""
    end = start + i32(buf, start)[0] - 1
    pos = start + 4
    while pos < end:
        t = buf[pos]
        name_end = buf.index(b"\x00", pos + 1)
        value_end = value_end_of(t, buf, name_end + 1)
        name = buf[pos + 1:name_end]
        if t != OBJECT:
            raise InvalidUpdate(f"binary diff of {_show(name)} must be an object {{o, d}}")
        diff.add(name, _BINARY, _parse_binary_patch(buf, name_end + 1, name))
        pos = value_end


def _parse_binary_patch(buf: bytes, start: int, where: bytes) -> tuple[int, bytes]:
    offset: int | None = None
    data: bytes | None = None
    end = start + i32(buf, start)[0] - 1
    pos = start + 4
    while pos < end:
        t = buf[pos]
        name_end = buf.index(b"\x00", pos + 1)
        vs = name_end + 1
        key = buf[pos + 1:name_end]
        if key == b"o" and t in (INT32, INT64):
            offset = i32(buf, vs)[0] if t == INT32 else int.from_bytes(buf[vs:vs + 8], "little", signed=True)
        elif key == b"d" and t == BINARY:
            data = buf[vs + 5:vs + 5 + i32(buf, vs)[0]]
        else:
            raise InvalidUpdate(f"binary diff of {_show(where)}: unexpected field {_show(key)} "
                                f"(BSON type 0x{t:02x}); expected o: <int>, d: <BinData>")
        pos = value_end_of(t, buf, vs)
    if offset is None or data is None or offset < 0:
        raise InvalidUpdate(f"binary diff of {_show(where)} needs o: <offset >= 0> and d: <BinData>")
    return offset, data


def _parse_array(buf: bytes, start: int, where: bytes) -> _ArrDiff:
    """Parse and validate an array diff (ArrayDiffReader)."""
    end = start + i32(buf, start)[0] - 1
    pos = start + 4  # first element is "a" (checked by _parse_sub)
    t = buf[pos]
    if t != BOOL:
        raise InvalidUpdate(f"Expected array header to be bool (array diff of {_show(where)})")  # 4770519
    if buf[pos + 3] != 1:
        raise InvalidUpdate(f"Expected array header to be value true (array diff of {_show(where)})")  # 4770520
    pos += 4
    new_len = None
    if pos < end and buf[pos + 1:pos + 3] == b"l\x00":
        if buf[pos] != INT32:  # checkSection(kResizeSectionFieldName, NumberInt) 4770507
            raise InvalidUpdate(f"Expected 'l' section of array diff of {_show(where)} to be an int32")
        new_len = i32(buf, pos + 3)[0]
        if not 0 <= new_len <= _MAX_ARRAY_INDEX:
            raise InvalidUpdate(f"bad new array length {new_len} in array diff of {_show(where)}")
        pos += 7
    mods = _parse_array_entries(buf, pos, end, where)
    if new_len is not None and mods and mods[-1][0] >= new_len:
        raise InvalidUpdate(f"array diff of {_show(where)} modifies index {mods[-1][0]} "
                            f"beyond its new length {new_len}")
    return _ArrDiff(new_len, mods)


def _parse_array_entries(buf: bytes, pos: int, end: int, where: bytes) -> list[tuple[int, int, Any]]:
    mods: list[tuple[int, int, Any]] = []
    last = -1
    while pos < end:
        t = buf[pos]
        name_end = buf.index(b"\x00", pos + 1)
        value_end = value_end_of(t, buf, name_end + 1)
        name = buf[pos + 1:name_end]
        idx = _array_index(name, where)
        if idx <= last:
            raise InvalidUpdate(f"array diff of {_show(where)}: indexes must be ascending, "
                                f"got {_show(name)} after index {last}")
        last = idx
        if name[0] == 0x75:  # u<idx>
            mods.append((idx, _UPDATE, (t, buf[name_end + 1:value_end])))
        elif name[0] == 0x73:  # s<idx>
            if t != OBJECT:
                raise InvalidUpdate(f"expected sub diff at index {idx} of {_show(where)}")  # 4770501
            mods.append((idx, *_parse_sub(buf, name_end + 1, where + b"." + index_name(idx))))
        else:
            raise InvalidUpdate(f"Expected either 'u' (update) or 's' (sub diff) at index "
                                f"{idx} of {_show(where)} but got {_show(name)}")  # 4770502
        pos = value_end
    return mods


def _array_index(name: bytes, where: bytes) -> int:
    # 4770521: at least two characters; 4770512: parseUnsignedBase10Integer.
    if len(name) < 2:
        raise InvalidUpdate(f"array diff of {_show(where)}: field name {_show(name)} is not "
                            "'a', 'l', 'u<index>' or 's<index>'")
    digits = name[1:]
    if not digits.isdigit():
        raise InvalidUpdate(f"array diff of {_show(where)}: expected an integer index but got "
                            f"{_show(name)}")
    idx = int(digits)
    if idx >= _MAX_ARRAY_INDEX:
        raise InvalidUpdate(f"array diff of {_show(where)}: index {idx} is too large")
    return idx


# -------------------------------------------------------------------- applying

def _apply_document(buf: bytes, start: int, diff: _DocDiff) -> bytes:
    """New raw document from the document at ``buf[start]`` and ``diff``
    (DiffApplier::applyDiffToObject).  The hot loop: value sizes inline."""
    end = start + i32(buf, start)[0] - 1
    pos = run = start + 4
    mods = diff.mods
    out: list[bytes] = []
    written: set[bytes] = set()
    while pos < end:
        t = buf[pos]
        name_end = buf.index(0, pos + 1)
        k = VALUE_SIZE[t]
        if k >= 100:
            value_end = name_end + k - 99 + i32(buf, name_end + 1)[0]
        elif k >= 0:
            value_end = name_end + 1 + k
        else:
            value_end = skip_value(t, buf, name_end + 1)
        mod = mods.get(buf[pos + 1:name_end])
        if mod is not None:
            if run < pos:
                out.append(buf[run:pos])
            run = value_end
            kind = mod[0]
            if kind == _UPDATE:
                out.append(mod[1])
                written.add(buf[pos + 1:name_end])
            elif kind != _DELETE and kind != _INSERT:
                out.append(_modified_field(buf, pos, name_end, value_end, kind, mod[1]))
        pos = value_end
    if pos != end:
        raise InvalidUpdate("BSON element runs past the end of its document")
    if run < end:
        out.append(buf[run:end])
    for name, element in diff.appends:
        if name not in written:
            out.append(element)
    return document(out)


def _modified_field(buf: bytes, pos: int, name_end: int, value_end: int,
                    kind: int, payload: Any) -> bytes:
    """The element that replaces field ``buf[pos:value_end]`` under a sub-diff
    or a binary patch."""
    t = buf[pos]
    if kind == _SUBDOC and t == OBJECT:
        return buf[pos:name_end + 1] + _apply_document(buf, name_end + 1, payload)
    if kind == _SUBARR and t == ARRAY:
        return buf[pos:name_end + 1] + _apply_array(buf, name_end + 1, payload)
    if kind == _BINARY:
        return _patched_binary(buf, pos, name_end, value_end, payload)
    # Kind mismatch: a later entry rewrites this field; the server writes null.
    return b"\x0a" + buf[pos + 1:name_end + 1]


def _patched_binary(buf: bytes, pos: int, name_end: int, value_end: int,
                    patch: tuple[int, bytes]) -> bytes:
    """Keep the first ``o`` bytes of the BinData, append ``d`` (same subtype).
    An offset past the end, or a value that is not BinData, is left as is."""
    offset, data = patch
    vs = name_end + 1
    if buf[pos] != BINARY or offset > i32(buf, vs)[0]:
        return buf[pos:value_end]
    new = buf[vs + 5:vs + 5 + offset] + data
    return (buf[pos:vs] + len(new).to_bytes(4, "little") + buf[vs + 4:vs + 5] + new)


def _apply_array(buf: bytes, start: int, diff: _ArrDiff) -> bytes:
    """New raw array from the array at ``buf[start]`` and ``diff``
    (DiffApplier::applyDiffToArray): walk the old elements below the new
    length, then append what lies past them."""
    end = start + i32(buf, start)[0] - 1
    mods = diff.mods
    stop = -1 if diff.new_len is None else diff.new_len
    out: list[bytes] = []
    idx = mi = 0
    next_idx = mods[0][0] if mods else -1
    pos = start + 4
    while pos < end and idx != stop:
        t = buf[pos]
        name_end = buf.index(0, pos + 1)
        k = VALUE_SIZE[t]
        if k >= 100:
            value_end = name_end + k - 99 + i32(buf, name_end + 1)[0]
        elif k >= 0:
            value_end = name_end + 1 + k
        else:
            value_end = skip_value(t, buf, name_end + 1)
        key = index_name(idx)
        if idx == next_idx:
            out.append(_array_element(buf, pos, name_end, key, mods[mi]))
            mi += 1
            next_idx = mods[mi][0] if mi < len(mods) else -1
        elif buf[pos + 1:name_end] == key:
            out.append(buf[pos:value_end])
        else:  # BSONArrayBuilder renames elements to their position
            out.append(bytes((t,)) + key + buf[name_end:value_end])
        idx += 1
        pos = value_end
    _append_tail(out, idx, diff.new_len, mods, mi)
    return document(out)


def _append_tail(out: list[bytes], idx: int, new_len: int | None,
                 mods: list[tuple[int, int, Any]], mi: int) -> None:
    """Past the old elements: ``u`` appends its value, ``s`` appends null and
    a gap up to the next modification or the new length appends null.  Every
    modification left (``mods[mi:]``) addresses an index >= ``idx``."""
    for mod in mods[mi:]:
        while idx < mod[0]:
            out.append(b"\x0a" + index_name(idx) + b"\x00")
            idx += 1
        out.append(_array_element(None, 0, 0, index_name(idx), mod))
        idx += 1
    while new_len is not None and idx < new_len:
        out.append(b"\x0a" + index_name(idx) + b"\x00")
        idx += 1


def _array_element(buf: bytes | None, pos: int, name_end: int, key: bytes,
                   mod: tuple[int, int, Any]) -> bytes:
    """Element ``key`` of the new array under modification ``mod``; ``buf`` is
    None past the end of the old array (appendNewValueForArrayIndex)."""
    _, kind, payload = mod
    if kind == _UPDATE:
        t, value = payload
        return bytes((t,)) + key + b"\x00" + value
    if buf is not None:
        t = buf[pos]
        if kind == _SUBDOC and t == OBJECT:
            return b"\x03" + key + b"\x00" + _apply_document(buf, name_end + 1, payload)
        if kind == _SUBARR and t == ARRAY:
            return b"\x04" + key + b"\x00" + _apply_array(buf, name_end + 1, payload)
    return bytes((NULL,)) + key + b"\x00"


# ----------------------------------------------------------------------- API

def _parse(diff: Any) -> _DocDiff:
    raw = raw_of(diff)
    check_document(raw, "diff")
    try:
        return _parse_document(raw, 0)
    except BSON_ERRORS as exc:
        raise InvalidUpdate(f"diff is not valid BSON: {exc}") from None


def validate_delta(diff: Any) -> None:
    """Raise InvalidUpdate, naming the problem, if ``diff`` (the ``o.diff`` of
    a ``$v: 2`` entry: a mapping in field order, a RawBSONDocument or raw
    bytes) is not a well-formed document diff."""
    _parse(diff)


def apply_delta(raw_doc: bytes, diff: Any) -> bytes:
    """Apply the ``$v: 2`` document diff ``diff`` (``o["diff"]``: a mapping in
    field order, a RawBSONDocument or raw bytes; raw is fastest) to the raw
    BSON document ``raw_doc`` and return the new raw document.

    Takes the C-codec path (``deltadict``) when it can vouch for an exact
    result, else the raw walk (``apply_delta_raw``); both give the same bytes.
    Raises InvalidUpdate if the diff is malformed or ``raw_doc`` is not BSON.
    """
    raw_diff = raw_of(diff)
    new = apply_delta_codec(raw_doc, raw_diff)
    if new is not None:
        return new
    return apply_delta_raw(raw_doc, raw_diff)


def apply_delta_raw(raw_doc: bytes, diff: Any) -> bytes:
    """``apply_delta`` by the walk over raw BSON only (the reference path)."""
    parsed = _parse(diff)
    check_document(raw_doc)
    try:
        return _apply_document(raw_doc, 0, parsed)
    except BSON_ERRORS as exc:
        raise InvalidUpdate(f"document is not valid BSON: {exc}") from None
