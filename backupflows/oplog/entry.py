"""One oplog entry, read from raw BSON without decoding its payload.

``parse`` walks the top-level fields once and keeps offsets; ``o`` and ``o2``
stay raw until an operation needs them. ``describe`` gives the ``ts``, ``op``
and ``ns`` every error message names.
"""

from __future__ import annotations

import struct
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
    """Offsets of the fields of one raw oplog entry."""

    __slots__ = ("raw", "op", "ns", "ui", "ts", "t", "o_span", "o2_span", "lsid",
                 "txn_number", "from_migrate", "upsert", "multi_op_type", "has_prev",
                 "key")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.op: str | None = None
        self.ns: str | None = None
        self.ui: bytes | None = None
        self.ts: int | None = None
        self.t: int = -1
        self.o_span: tuple[int, int] | None = None
        self.o2_span: tuple[int, int] | None = None
        self.lsid: bytes | None = None
        self.txn_number: int | None = None
        self.from_migrate = False
        self.upsert = False
        self.multi_op_type: int | None = None
        self.has_prev = False
        self.key: bytes | None = None

    def describe(self) -> str:
        return f"oplog entry ts={format_ts(self.ts)} op={self.op!r} ns={self.ns!r}"

    def error(self, what: str, cls: type[OplogError] = OplogError) -> OplogError:
        return cls(f"{self.describe()}: {what}")

    @property
    def db(self) -> str:
        return (self.ns or "").split(".", 1)[0]

    @property
    def coll(self) -> str:
        parts = (self.ns or "").split(".", 1)
        return parts[1] if len(parts) == 2 else ""

    def o(self) -> bytes:
        if self.o_span is None:
            raise self.error("no 'o' document")
        return self.raw[self.o_span[0]:self.o_span[1]]

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


def _set_field(e: Entry, name: bytes, t: int, raw: bytes, vs: int, ve: int) -> None:
    if name == b"op":
        e.op = _str(raw, t, vs)
    elif name == b"ns":
        e.ns = _str(raw, t, vs)
    elif name == b"o":
        if t == 0x03:
            e.o_span = (vs, ve)
    elif name == b"o2":
        if t == 0x03:
            e.o2_span = (vs, ve)
    elif name == b"ts":
        if t == 0x11:
            e.ts = _u64(raw, vs)[0]
    elif name == b"ui":
        if t == 0x05 and _i32(raw, vs)[0] == 16:
            e.ui = raw[vs + 5:vs + 21]
    elif name == b"t":
        e.t = _int(raw, t, vs) or 0
    elif name == b"lsid":
        if t == 0x03:
            e.lsid = raw[vs:ve]
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


def parse(raw: bytes | bytearray | memoryview, outer: Entry | None = None) -> Entry:
    """Parse one raw entry. Inner ops of applyOps take the position
    (``ts``/``t``) of ``outer``."""
    raw = bytes(raw)
    e = Entry(raw)
    n = len(raw)
    try:
        if n < 5 or _i32(raw, 0)[0] != n or raw[-1] != 0:
            raise OplogError("corrupt BSON: the length prefix does not match the entry")
        pos, end = 4, n - 1
        while pos < end:
            t = raw[pos]
            ne = raw.index(b"\x00", pos + 1)
            ve = skip_value(t, raw, ne + 1)
            if ve > end:
                raise OplogError("corrupt BSON: a field runs past the end of the entry")
            _set_field(e, raw[pos + 1:ne], t, raw, ne + 1, ve)
            pos = ve
    except OplogError as exc:
        raise e.error(str(exc)) from None
    except (struct.error, IndexError, ValueError, KeyError_, UnicodeDecodeError) as exc:
        raise e.error(f"corrupt BSON: {exc}") from None
    if outer is not None:
        _inherit(e, outer)
    _check(e)
    return e


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
    if e.op == "u" and e.o2_span is None:
        raise e.error("update without an 'o2' document")
    if e.op != "c" and "." not in e.ns:
        raise e.error("namespace has no collection part")
