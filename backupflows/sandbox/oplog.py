"""``local.oplog.rs``, written the way a MongoDB 7.0 primary writes it.

Field order of an entry follows the server's IDL (``OplogEntryBase`` in
``src/mongo/db/repl/oplog_entry.idl``: the chained ``OperationSessionInfo``,
then ``DurableReplOperation``, then ``OpTimeBase``, then its own fields), which
is also what the 2024-2026 captures in ``fixtures/mongo-tools`` show::

    lsid, txnNumber,                 (retryable writes and transactions only)
    op, ns, ui, o, o2, needsRetryImage, stmtId,
    ts, t, v, wall,
    prevOpTime, multiOpType          (retryable writes and transactions only)

``t`` and ``v`` are Int64, ``stmtId`` Int32, ``wall`` a Date in milliseconds.
(Servers up to 5.0 wrote ``wall`` before ``v`` and Int32 ``t``/``v``; the old
fixtures show that order, the recent ones the order above.)

``ts`` is (seconds of the wall clock, counter): strictly increasing; the
counter restarts at 1 when the second changes. The oplog is a capped
collection whose record id is the 64-bit ``ts`` itself, so a scan from a
timestamp is a range lookup, natural order is ``ts`` order, and it is capped
by a byte size: the oldest entries drop off (the newest one never does).
"""

from __future__ import annotations

import hashlib
import struct
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass

from bson.binary import Binary
from bson.int64 import Int64

from backupflows.sandbox.storage import Collection
from backupflows.sandbox.wire import doc_from_elements, element, elements, string

TERM = 1
NULL_OPTIME = (0, -1)  # prevOpTime of the first write of a retryable write / txn
_UID_NO_AUTH = hashlib.sha256(b"").digest()  # lsid.uid when nobody is authenticated

_LSID_CACHE: dict[tuple[uuidlib.UUID, int], bytes] = {}
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_I32 = struct.Struct("<i")


def ts_value(secs: int, inc: int) -> int:
    return (secs << 32) | inc


def ts_parts(value: int) -> tuple[int, int]:
    return value >> 32, value & 0xFFFFFFFF


@dataclass
class SessionInfo:
    """What a retryable write or a transaction writes into its entries."""

    lsid_id: uuidlib.UUID
    txn_number: int
    stmt_id: int | None = None
    prev_ts: int = 0  # 0 means the null optime {ts: Timestamp(0, 0), t: -1}

    def lsid_elements(self) -> bytes:
        key = (self.lsid_id, self.txn_number)
        cached = _LSID_CACHE.get(key)
        if cached is None:
            if len(_LSID_CACHE) > 4096:
                _LSID_CACHE.clear()
            cached = _LSID_CACHE[key] = elements({
                "lsid": {"id": self.lsid_id, "uid": Binary(_UID_NO_AUTH)},
                "txnNumber": Int64(self.txn_number)})
        return cached

    def prev_op_time(self) -> bytes:
        t = -1 if self.prev_ts == 0 else TERM
        body = element("ts", 0x11, _U64.pack(self.prev_ts)) + element("t", 0x12, _I64.pack(t))
        return element("prevOpTime", 0x03, doc_from_elements(body))


_T_AND_V = element("t", 0x12, _I64.pack(TERM)) + element("v", 0x12, _I64.pack(2))


def uuid_value(value: uuidlib.UUID) -> bytes:
    return _I32.pack(16) + b"\x04" + value.bytes


def operation_elements(op: str, ns: str, o: bytes, ui: uuidlib.UUID | None = None,
                       o2: bytes | None = None) -> bytes:
    """``op, ns, ui, o, o2`` of an entry (also the whole of an applyOps inner op)."""
    parts = [element("op", 0x02, string(op)), element("ns", 0x02, string(ns))]
    if ui is not None:
        parts.append(element("ui", 0x05, uuid_value(ui)))
    parts.append(element("o", 0x03, o))
    if o2 is not None:
        parts.append(element("o2", 0x03, o2))
    return b"".join(parts)


class OplogCollection(Collection):
    """The capped oplog: record id = 64-bit ts, no ``_id`` index."""

    has_id_index = False

    def __init__(self, size_bytes: int) -> None:
        super().__init__("local", "oplog.rs", {"capped": True, "size": size_bytes})

    def append(self, ts: int, raw: bytes) -> None:
        self.records[ts] = raw
        self.data_size += len(raw)
        self.next_rid = ts + 1

    def first_ts(self) -> int:
        return self.records.keys()[0] if self.records else 0

    def last_ts(self) -> int:
        return self.records.keys()[-1] if self.records else 0


class Oplog:
    """Appends entries with fresh timestamps and keeps the oplog capped."""

    def __init__(self, size_bytes: int, on_append: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        if size_bytes < 4096:
            raise ValueError("oplog size must be at least 4096 bytes")
        self.coll = OplogCollection(size_bytes)
        self.size_bytes = size_bytes
        self._clock = clock
        self._on_append = on_append
        self.last_ts = 0
        self.last_wall_ms = 0

    def next_ts(self) -> int:
        secs, inc = ts_parts(self.last_ts)
        now = int(self._clock())
        return ts_value(now, 1) if now > secs else ts_value(secs, inc + 1)

    def log(self, op: str, ns: str, o: bytes, *, ui: uuidlib.UUID | None = None,
            o2: bytes | None = None, session: SessionInfo | None = None,
            extra: bytes = b"") -> int:
        """Write one entry; ``extra`` holds elements between ``o2`` and ``stmtId``
        (``needsRetryImage``). Returns its ts."""
        ts = self.next_ts()
        wall_ms = max(int(self._clock() * 1000), self.last_wall_ms)
        parts = [session.lsid_elements() if session else b"",
                 operation_elements(op, ns, o, ui, o2), extra]
        if session is not None and session.stmt_id is not None:
            parts.append(element("stmtId", 0x10, _I32.pack(session.stmt_id)))
        parts += [b"\x11ts\x00", _U64.pack(ts), _T_AND_V, b"\x09wall\x00", _I64.pack(wall_ms)]
        if session is not None:
            parts.append(session.prev_op_time())
        self.coll.append(ts, doc_from_elements(*parts))
        self.last_ts, self.last_wall_ms = ts, wall_ms
        self._cap()
        self._on_append()
        return ts

    def noop(self, msg: str) -> int:
        return self.log("n", "", doc_from_elements(element("msg", 0x02, string(msg))))

    def _cap(self) -> None:
        coll = self.coll
        while coll.data_size > self.size_bytes and len(coll.records) > 1:
            coll.delete(coll.records.keys()[0])

    def truncate_before(self, ts: int) -> int:
        """Drop every entry older than ``ts`` (never the newest); the count."""
        coll, removed = self.coll, 0
        while len(coll.records) > 1 and coll.records.keys()[0] < ts:
            coll.delete(coll.records.keys()[0])
            removed += 1
        return removed
