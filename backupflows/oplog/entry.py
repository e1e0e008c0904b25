"""One oplog entry, read from raw BSON without decoding its payload.

``parse`` walks the top-level fields once and keeps offsets; ``o`` and ``o2``
stay raw until an operation needs them. Entries of a layout seen before (the
same op/ns/ui bytes, then ``o``/``o2``, then the same fixed-size fields) are
read by a few byte comparisons instead (``_Layouts``), with the same result.
``describe`` gives the ``ts``, ``op`` and ``ns`` every error message names.
"""

from __future__ import annotations

import re
import struct
from functools import lru_cache
from typing import Any

import bson

from backupflows.bsonorder import OBJECTID, KeyError_, skip_value
from backupflows.errors import OplogError

_i32 = struct.Struct("<i").unpack_from
_i64 = struct.Struct("<q").unpack_from
_u64 = struct.Struct("<Q").unpack_from
_f64 = struct.Struct("<d").unpack_from

CRUD_OPS = frozenset("iud")
SKIPPED_OPS = frozenset(("cd", "ci", "cu", "km"))
KNOWN_OPS = frozenset(("i", "u", "d", "c", "n")) | SKIPPED_OPS

_INTERNAL_EXACT = frozenset((
    "config.system.sessions", "config.image_collection", "config.system.preimages"))


@lru_cache(maxsize=4096)
def is_internal(ns: str) -> bool:
    """Namespaces a backup never copies (reference: "Idempotency")."""
    if ns.startswith("local.") or ns == "local":
        return True
    if not ns.startswith("config."):
        return False
    return (ns in _INTERNAL_EXACT or ns.startswith("config.cache.")
            or ns.startswith("config.transactions"))


def format_ts(ts: int | None) -> str:
    if ts is None:
        return "?"
    return f"Timestamp({ts >> 32}, {ts & 0xFFFFFFFF})"


class Entry:
    """Offsets of the fields of one raw oplog entry (class attributes are the
    defaults of absent fields)."""

    op: str | None = None
    ns: str | None = None
    ui: bytes | None = None
    ts: int | None = None
    t: int = -1
    o_span: tuple[int, int] | None = None
    o2_span: tuple[int, int] | None = None
    lsid: bytes | None = None
    txn_number: int | None = None
    from_migrate: bool = False
    upsert: bool = False
    multi_op_type: int | None = None
    has_prev: bool = False
    key: bytes | None = None
    db: str = ""
    coll: str = ""
    _o: bytes | None = None

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def describe(self) -> str:
        return f"oplog entry ts={format_ts(self.ts)} op={self.op!r} ns={self.ns!r}"

    def error(self, what: str, cls: type[OplogError] = OplogError) -> OplogError:
        return cls(f"{self.describe()}: {what}")

    def o(self) -> bytes:
        o = self._o
        if o is None:
            if self.o_span is None:
                raise self.error("no 'o' document")
            o = self._o = self.raw[self.o_span[0]:self.o_span[1]]
        return o

    def o2(self) -> bytes | None:
        if self.o2_span is None:
            return None
        return self.raw[self.o2_span[0]:self.o2_span[1]]

    def decode_o(self) -> dict[str, Any]:
        return bson.decode(self.o())

    def txn_key(self) -> bytes | None:
        """Identity of the entry's transaction: session id and txnNumber."""
        if self.lsid is None or self.txn_number is None:
            return None
        return self.lsid + struct.pack(">q", self.txn_number)


_STRINGS: dict[bytes, str] = {}


def _text(b: bytes) -> str:
    """``op``/``ns`` values, decoded once per distinct value (bounded)."""
    s = _STRINGS.get(b)
    if s is None:
        if len(_STRINGS) >= 4096:
            _STRINGS.clear()
        s = _STRINGS[b] = b.decode("utf-8")
    return s


def _int(raw: bytes, t: int, vs: int) -> int | None:
    if t == 0x12:
        return _i64(raw, vs)[0]
    if t == 0x10:
        return _i32(raw, vs)[0]
    if t == 0x01:
        return int(_f64(raw, vs)[0])
    return None


def _set_rare(e: Entry, name: bytes, t: int, raw: bytes, vs: int, ve: int) -> None:
    """Fields most entries do not have, ``t`` of another type than int64, and
    ``op``/``ns`` that are not strings (then absent). An ``o``/``o2`` that is
    not a document, a ``ts`` that is not a Timestamp or a ``ui`` that is not
    a 16-byte BinData is ignored."""
    if name == b"t":
        e.t = _int(raw, t, vs) or 0
    elif name == b"txnNumber":
        e.txn_number = _int(raw, t, vs)
    elif name == b"fromMigrate":
        e.from_migrate = t == 0x08 and raw[vs] == 1
    elif name == b"b":
        e.upsert = t == 0x08 and raw[vs] == 1
    elif name == b"multiOpType":
        e.multi_op_type = _int(raw, t, vs)
    elif name == b"prevOpTime":
        e.has_prev = True
    elif name == b"op":  # not a string: absent for _check
        e.op = None
    elif name == b"ns":
        e.ns = None


_RARE = frozenset((b"t", b"txnNumber", b"fromMigrate", b"b", b"multiOpType",
                   b"prevOpTime", b"op", b"ns"))
_SIZE = [-1] * 256
for _t, _n in {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x06: 0, 0x10: 4, 0x11: 8,
               0x12: 8, 0x13: 16, 0xFF: 0, 0x7F: 0}.items():
    _SIZE[_t] = _n


def parse(raw: bytes | bytearray | memoryview, outer: Entry | None = None) -> Entry:
    """Parse one raw entry. Inner ops of applyOps take the position
    (``ts``/``t``) of ``outer``."""
    if type(raw) is not bytes:
        raw = bytes(raw)
    n = len(raw)
    e = None
    try:
        if n < 5 or _i32(raw, 0)[0] != n or raw[-1] != 0:
            raise OplogError("corrupt BSON: the length prefix does not match the entry")
        e = _layouts.match(raw, n)
        if e is None:
            e = Entry(raw)
            _walk(e, raw, n - 1)
            learn = True
        else:
            learn = False
    except OplogError as exc:
        raise (e or Entry(raw)).error(str(exc)) from None
    except (struct.error, IndexError, ValueError, KeyError_, UnicodeDecodeError) as exc:
        raise (e or Entry(raw)).error(f"corrupt BSON: {exc}") from None
    if outer is not None:
        _inherit(e, outer)
    if learn or e.ts is None:
        _check(e)  # an entry of a known layout passes every other check as its model did
    if learn and e.op in CRUD_OPS:
        _layouts.learn(raw, e)
    return e


class _Layout:
    """The byte layout of a family of entries (one server, op and
    namespace): the same leading op/ns/ui elements byte for byte, then ``o``
    (and ``o2``), then fixed-size elements with the same type and name bytes
    at the same places (``ts``, ``t``, ``v``, ``wall``...)."""

    __slots__ = ("prefix", "o_at", "op", "ns", "db", "coll", "ui", "o2", "suffix",
                 "ts_at", "t_at")

    def __init__(self, prefix: bytes, e: Entry, o2: bool, suffix_len: int,
                 headers: tuple[tuple[int, bytes], ...], ts_at: int, t_at: int) -> None:
        self.prefix, self.o_at = prefix, 4 + len(prefix)
        self.op, self.ns, self.ui, self.o2 = e.op, e.ns, e.ui, o2
        self.db, self.coll = e.db, e.coll  # e passed _check
        self.ts_at, self.t_at = ts_at, t_at
        # the fixed part after o/o2 as one pattern: each element's type and
        # name bytes where they were, any value bytes between, this length
        pattern, at = [], 0
        for start, header in headers:
            pattern.append(b".{%d}" % (start - at) + re.escape(header))
            at = start + len(header)
        pattern.append(b".{%d}" % (suffix_len - at))
        self.suffix = re.compile(b"".join(pattern), re.DOTALL).fullmatch


_OBJECTID_KEY = bytes((OBJECTID,))
_new_entry = object.__new__


def objectid_key(raw: bytes, start: int, end: int) -> bytes | None:
    """The ``_id`` key (``bsonorder.id_key``) of the document ``raw[start:end]``
    if its first element is an ObjectId ``_id`` (the usual case: the type
    byte, then the 12 bytes), else None."""
    if (end - start >= 22 and raw[start + 4] == 0x07 and raw.startswith(b"_id\x00", start + 5)
            and raw[end - 1] == 0):
        return _OBJECTID_KEY + raw[start + 9:start + 21]
    return None


_PREFIX_NAMES = frozenset((b"op", b"ns", b"ui", b"v"))
_SUFFIX_RARE = _RARE - {b"t"}


class _Layouts:
    """Entries of a known layout are read by a few byte comparisons instead
    of a walk: ``match`` gives exactly what ``_walk`` would (or None), and
    layouts are learned from walked CRUD entries (at most ``MAX``, oldest
    dropped; a walk that finds no layout is retried only every ``RETRY``
    walks, so entries of unusual shapes pay almost nothing)."""

    MAX, RETRY = 8, 32

    def __init__(self) -> None:
        self.known: list[_Layout] = []
        self.walks = 0

    def match(self, raw: bytes, n: int) -> Entry | None:
        for lay in self.known:
            if raw.startswith(lay.prefix, 4):
                try:
                    e = self._match(lay, raw, n)
                except struct.error:  # truncated: the walk names the problem
                    return None
                if e is not None:
                    return e
        return None

    @staticmethod
    def _match(lay: _Layout, raw: bytes, n: int) -> Entry | None:
        vs = lay.o_at + 3
        if not raw.startswith(b"\x03o\x00", lay.o_at):
            return None
        ve = end = vs + _i32(raw, vs)[0]
        if ve < vs + 5:
            return None
        if lay.o2:
            if not raw.startswith(b"\x03o2\x00", ve):
                return None
            end = ve + 4 + _i32(raw, ve + 4)[0]
            if end < ve + 9:
                return None
        if lay.suffix(raw, end, n - 1) is None:
            return None
        e = _new_entry(Entry)  # Entry(raw) without a Python __init__ call
        e.raw = raw
        e.op, e.ns, e.db, e.coll, e.o_span = lay.op, lay.ns, lay.db, lay.coll, (vs, ve)
        if lay.ui is not None:
            e.ui = lay.ui
        if lay.o2:
            e.o2_span = (ve + 4, end)
        # the key of o's _id (o2's for updates) when it is the usual ObjectId
        if lay.op != "u":
            e.key = objectid_key(raw, vs, ve)
        elif lay.o2:
            e.key = objectid_key(raw, ve + 4, end)
        if lay.ts_at >= 0:
            e.ts = _u64(raw, end + lay.ts_at)[0]
        if lay.t_at >= 0:
            e.t = _i64(raw, end + lay.t_at)[0]
        return e

    def learn(self, raw: bytes, e: Entry) -> None:
        self.walks += 1
        if (self.walks - 1) % self.RETRY:
            return
        lay = _layout_of(raw, e)
        if lay is not None:
            self.walks = 0
            if len(self.known) >= self.MAX:
                del self.known[0]
            self.known.append(lay)


def _layout_of(raw: bytes, e: Entry) -> _Layout | None:
    """The layout of a walked entry, if it has one ``_Layouts`` can match."""
    elements = []
    pos, end = 4, len(raw) - 1
    while pos < end:
        ne = raw.index(0, pos + 1)
        ve = skip_value(raw[pos], raw, ne + 1)
        elements.append((pos, raw[pos], raw[pos + 1:ne], ne + 1, ve))
        pos = ve
    names = [el[2] for el in elements]
    if b"o" not in names:
        return None
    i = names.index(b"o")
    if elements[i][1] != 0x03 or not set(names[:i]) <= _PREFIX_NAMES:
        return None
    has_o2 = i + 1 < len(elements) and names[i + 1] == b"o2" and elements[i + 1][1] == 0x03
    rest = elements[i + 2 if has_o2 else i + 1:]
    base = elements[i + 1][4] if has_o2 else elements[i][4]  # where the fixed part starts
    headers, ts_at, t_at = [], -1, -1
    for start, t, name, vs, _ve in rest:
        if _SIZE[t] < 0 or name in _SUFFIX_RARE or name in (b"o", b"o2", b"lsid", b"ui"):
            return None
        if name == b"t" and t != 0x12:
            return None
        headers.append((start - base, raw[start:vs]))
        if name == b"ts" and t == 0x11:
            ts_at = vs - base
        elif name == b"t":
            t_at = vs - base
    return _Layout(raw[4:elements[i][0]], e, has_o2, end - base, tuple(headers), ts_at, t_at)


_layouts = _Layouts()


def _walk(e: Entry, raw: bytes, end: int) -> None:
    """One pass over the top-level fields; the common fields (string op/ns,
    document o/o2, Timestamp ts, int64 t, 16-byte ui) are read inline, the
    rest by ``_set_rare``. A field of an unexpected type reads as absent."""
    pos, index, size_of = 4, raw.index, _SIZE
    while pos < end:
        t = raw[pos]
        ne = index(0, pos + 1)
        vs = ne + 1
        name = raw[pos + 1:ne]
        if t == 0x03:
            ve = vs + _i32(raw, vs)[0]
            if ve > end or ve < vs + 5:
                break
            if name == b"o":
                e.o_span = (vs, ve)
            elif name == b"o2":
                e.o2_span = (vs, ve)
            elif name == b"lsid":
                e.lsid = raw[vs:ve]
            pos = ve
            continue
        k = size_of[t]
        if k >= 0:
            ve = vs + k
            if t == 0x11:
                if name == b"ts" and ve <= end:
                    e.ts = _u64(raw, vs)[0]
                    pos = ve
                    continue
            elif t == 0x12 and name == b"t" and ve <= end:
                e.t = _i64(raw, vs)[0]
                pos = ve
                continue
        elif t == 0x02:
            ve = vs + 4 + _i32(raw, vs)[0]
            if ve > end or ve <= vs + 4:
                break
            if name == b"op":
                e.op = _text(raw[vs + 4:ve - 1])
                pos = ve
                continue
            if name == b"ns":
                e.ns = _text(raw[vs + 4:ve - 1])
                pos = ve
                continue
        elif t == 0x05:
            n = _i32(raw, vs)[0]
            ve = vs + 5 + n
            if name == b"ui" and n == 16 and ve <= end:
                e.ui = raw[vs + 5:ve]
                pos = ve
                continue
        else:
            ve = skip_value(t, raw, vs)
        if ve > end or ve < vs:
            break
        if name in _RARE:
            _set_rare(e, name, t, raw, vs, ve)
        pos = ve
    if pos != end:
        raise OplogError("corrupt BSON: a field runs past the end of the entry")


@lru_cache(maxsize=4096)
def _ns_parts(ns: str) -> tuple[str, str]:
    db, _, coll = ns.partition(".")
    return db, coll


def _inherit(e: Entry, outer: Entry) -> None:
    # The outer entry's position counts: inner ts (3.6 applyOps) only label.
    e.ts, e.t = outer.ts, outer.t


def _check(e: Entry) -> None:
    if e.op is None:
        raise e.error("missing or non-string 'op'")
    if e.op not in KNOWN_OPS:
        raise e.error(f"unknown op {e.op!r}")
    if e.ts is None:
        raise e.error("missing or non-Timestamp 'ts'")
    if e.op in SKIPPED_OPS or e.op == "n":
        return
    if e.o_span is None:
        raise e.error("missing or non-document 'o'")
    if e.ns is None and e.op == "c" and e.raw[e.o_span[0] + 5:].startswith(b"applyOps\x00"):
        e.ns = "admin.$cmd"  # some tools write applyOps entries without ns
    if e.ns is None:
        raise e.error("missing or non-string 'ns'")
    e.db, e.coll = _ns_parts(e.ns)
    if e.op == "u" and e.o2_span is None:
        raise e.error("update without an 'o2' document")
    if e.op != "c" and "." not in e.ns:
        raise e.error("namespace has no collection part")
