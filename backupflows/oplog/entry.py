"""One oplog entry, read from raw BSON without decoding its payload.

``parse`` walks the top-level fields once and keeps offsets; ``o`` and ``o2``
stay raw until an operation needs them. ``describe`` gives the ``ts``, ``op``
and ``ns`` every error message names.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

import bson

from backupflows.bsonorder import KeyError_, skip_value
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


def _str(raw: bytes, t: int, vs: int) -> str | None:
    if t != 0x02:
        return None
    n = _i32(raw, vs)[0]
    return raw[vs + 4:vs + 3 + n].decode("utf-8")


def _int(raw: bytes, t: int, vs: int) -> int | None:
    if t == 0x12:
        return _i64(raw, vs)[0]
    if t == 0x10:
        return _i32(raw, vs)[0]
    if t == 0x01:
        return int(_f64(raw, vs)[0])
    return None


def _set_field(e: Entry, code: int, t: int, raw: bytes, vs: int, ve: int) -> None:
    if code == _OP:
        e.op = _str(raw, t, vs)
    elif code == _NS:
        e.ns = _str(raw, t, vs)
    elif code == _O:
        if t == 0x03:
            e.o_span = (vs, ve)
    elif code == _O2:
        if t == 0x03:
            e.o2_span = (vs, ve)
    elif code == _TS:
        if t == 0x11:
            e.ts = _u64(raw, vs)[0]
    elif code == _UI:
        if t == 0x05 and _i32(raw, vs)[0] == 16:
            e.ui = raw[vs + 5:vs + 21]
    elif code == _T:
        e.t = _int(raw, t, vs) or 0
    elif code == _LSID:
        if t == 0x03:
            e.lsid = raw[vs:ve]
    elif code == _TXN:
        e.txn_number = _int(raw, t, vs)
    elif code == _FROM_MIGRATE:
        e.from_migrate = t == 0x08 and raw[vs] == 1
    elif code == _UPSERT:
        e.upsert = t == 0x08 and raw[vs] == 1
    elif code == _MULTI_OP:
        e.multi_op_type = _int(raw, t, vs)
    else:
        e.has_prev = True


(_OP, _NS, _O, _O2, _TS, _UI, _T, _LSID, _TXN, _FROM_MIGRATE, _UPSERT, _MULTI_OP,
 _PREV) = range(1, 14)
_CODES = {b"op": _OP, b"ns": _NS, b"o": _O, b"o2": _O2, b"ts": _TS, b"ui": _UI, b"t": _T,
          b"lsid": _LSID, b"txnNumber": _TXN, b"fromMigrate": _FROM_MIGRATE, b"b": _UPSERT,
          b"multiOpType": _MULTI_OP, b"prevOpTime": _PREV}
_FIXED = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x06: 0, 0x10: 4, 0x11: 8, 0x12: 8,
          0x13: 16, 0xFF: 0, 0x7F: 0}


def parse(raw: bytes | bytearray | memoryview, outer: Entry | None = None) -> Entry:
    """Parse one raw entry. Inner ops of applyOps take the position
    (``ts``/``t``) of ``outer``."""
    raw = bytes(raw)
    e = Entry(raw)
    n = len(raw)
    try:
        if n < 5 or _i32(raw, 0)[0] != n or raw[-1] != 0:
            raise OplogError("corrupt BSON: the length prefix does not match the entry")
        _walk(e, raw, n - 1)
    except OplogError as exc:
        raise e.error(str(exc)) from None
    except (struct.error, IndexError, ValueError, KeyError_, UnicodeDecodeError) as exc:
        raise e.error(f"corrupt BSON: {exc}") from None
    if outer is not None:
        _inherit(e, outer)
    _check(e)
    return e


def _walk(e: Entry, raw: bytes, end: int) -> None:
    """One pass over the top-level fields, sizing common types inline."""
    pos, index, fixed, codes = 4, raw.index, _FIXED, _CODES
    while pos < end:
        t = raw[pos]
        ne = index(b"\x00", pos + 1)
        vs = ne + 1
        size = fixed.get(t)
        if size is not None:
            ve = vs + size
        elif t == 0x02 or t == 0x03 or t == 0x04:
            ve = vs + _i32(raw, vs)[0] + (4 if t == 0x02 else 0)
        else:
            ve = skip_value(t, raw, vs)
        if ve > end:
            raise OplogError("corrupt BSON: a field runs past the end of the entry")
        code = codes.get(raw[pos + 1:ne])
        if code is not None:
            _set_field(e, code, t, raw, vs, ve)
        pos = ve


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
    e.db, _, e.coll = e.ns.partition(".")
    if e.op == "u" and e.o2_span is None:
        raise e.error("update without an 'o2' document")
    if e.op != "c" and "." not in e.ns:
        raise e.error("namespace has no collection part")
