"""collMod: collection options and index options, as the server stores them.

Collection options are kept in the server's field order (``CollectionOptions
::appendBSON``): a changed option takes its canonical place. Index options
follow the server's ``IndexMetaData::update*Setting``: the field is removed
and, when set, appended at the end (``expireAfterSeconds`` as a 64-bit int;
``hidden``/``unique``/``prepareUnique`` false removes the field).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import bson
from bson.int64 import Int64

from backupflows.bsonorder import encode_element
from backupflows.head import rawdoc
from backupflows.head.catalog import COLLECTION, Collection
from backupflows.oplog.entry import Entry

if TYPE_CHECKING:
    from backupflows.head.writer import HeadWriter

CANONICAL = (b"capped", b"size", b"max", b"autoIndexId", b"temp", b"recordPreImages",
             b"changeStreamPreAndPostImages", b"storageEngine", b"indexOptionDefaults",
             b"validator", b"validationLevel", b"validationAction", b"collation",
             b"clusteredIndex", b"expireAfterSeconds", b"viewOn", b"pipeline", b"idIndex",
             b"timeseries", b"encryptedFields")
_NOT_OPTIONS = frozenset((b"collMod", b"index", b"dryRun", b"writeConcern", b"comment",
                          b"$db", b"timeseriesBucketsMayHaveMixedSchemaData"))
_INT32 = (-(1 << 31), (1 << 31) - 1)

Change = tuple[bytes, bytes | None]


def number(x: float | int) -> int | Int64:
    """A count the server appends with appendNumber(long long)."""
    n = int(x)
    return n if _INT32[0] <= n <= _INT32[1] else Int64(n)


def apply(w: HeadWriter, e: Entry, c: Collection, o_raw: bytes) -> None:
    index = rawdoc.subdocument(o_raw, b"index")
    if index is not None:
        _modify_index(w, e, c, index)
    changes = [_option_change(c, name, o_raw[s:end], o_raw, vs, end, t)
               for name, t, s, vs, end in rawdoc.iter_elements(o_raw)
               if name not in _NOT_OPTIONS]
    if changes:
        set_options(w, c, changes)


def _option_change(c: Collection, name: bytes, elem: bytes, raw: bytes, vs: int, end: int,
                   t: int) -> Change:
    value = bson.decode(rawdoc.build([elem]))[name.decode()]
    if name == b"expireAfterSeconds":
        if value == "off":
            return name, None
        return name, rawdoc.element("expireAfterSeconds", Int64(int(value)))
    if name in (b"validator", b"changeStreamPreAndPostImages", b"recordPreImages"):
        empty = value in ({}, False) or (isinstance(value, dict) and value.get("enabled") is False)
        return name, None if empty else elem
    if name in (b"cappedSize", b"cappedMax"):
        target = "size" if name == b"cappedSize" else "max"
        if target == "max" and value <= 0:
            return b"max", None
        return target.encode(), rawdoc.element(target, number(value))
    if name == b"timeseries" and t == 0x03:
        merged = rawdoc.subdocument(c.options, b"timeseries") or rawdoc.EMPTY
        for sub_name, _, s, _, sub_end in rawdoc.iter_elements(raw[vs:end]):
            merged = rawdoc.replace_or_append(merged, raw[vs:end][s:sub_end], sub_name)
        return name, b"\x03timeseries\x00" + merged
    return name, elem


def set_options(w: HeadWriter, c: Collection, changes: list[Change]) -> None:
    """Apply option changes (None removes) and store the result."""
    elems = dict(rawdoc.elements_of(c.options))
    for name, elem in changes:
        if elem is None:
            elems.pop(name, None)
        else:
            elems[name] = elem
    if c.type == COLLECTION:
        ordered = [elems.pop(n) for n in CANONICAL if n in elems] + list(elems.values())
    else:
        ordered = list(elems.values())
    new = rawdoc.build(ordered)
    if new != c.options:
        w.catalog.set_options(c, new)


def _find_index(w: HeadWriter, c: Collection, index: bytes) -> tuple[str, bytes] | None:
    name = rawdoc.value(index, b"name")
    pattern = rawdoc.subdocument(index, b"keyPattern")
    for idx_name, spec in w.catalog.indexes(c):
        if name is not None and idx_name == name:
            return idx_name, spec
        if pattern is not None and _same_key(spec, pattern):
            return idx_name, spec
    return None


def _same_key(spec: bytes, pattern: bytes) -> bool:
    key = rawdoc.subdocument(spec, b"key")
    return key is not None and encode_element(0x03, key, 0)[0] == encode_element(
        0x03, pattern, 0)[0]


def _modify_index(w: HeadWriter, e: Entry, c: Collection, index: bytes) -> None:
    found = _find_index(w, c, index)
    if found is None:
        return
    name, spec = found
    for opt, *_ in rawdoc.iter_elements(index):
        if opt in (b"name", b"keyPattern"):
            continue
        value = rawdoc.value(index, opt)
        if opt == b"expireAfterSeconds":
            spec = rawdoc.remove_and_append(
                spec, rawdoc.element("expireAfterSeconds", Int64(int(value))), opt)
        elif opt in (b"hidden", b"unique", b"prepareUnique"):
            elem = rawdoc.element(opt.decode(), True) if value else None
            spec = rawdoc.remove_and_append(spec, elem, opt)
        elif opt == b"forceNonUnique":
            if value:
                spec = rawdoc.remove_and_append(spec, None, b"unique")
        else:
            raise e.error(f"unknown collMod index option {opt.decode()!r}")
    w.catalog.replace_index(c, name, spec)


def matching_indexes(w: HeadWriter, c: Collection, which: Any, e: Entry) -> list[str]:
    """Names of the indexes a dropIndexes ``index`` value designates."""
    indexes = w.catalog.indexes(c)
    if which == "*":
        return [n for n, _ in indexes if n != "_id_"]
    if isinstance(which, str):
        return [which]
    if isinstance(which, list) and all(isinstance(x, str) for x in which):
        return list(which)
    if isinstance(which, dict):
        pattern = bson.encode(which)
        return [n for n, spec in indexes if _same_key(spec, pattern)]
    raise e.error(f"dropIndexes 'index' must be a name, '*', names or a key pattern, "
                  f"got {which!r}")
