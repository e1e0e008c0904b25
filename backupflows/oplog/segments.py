"""Oplog segments: contiguous runs of raw oplog entries as stored objects.

A segment is a ``container`` object of kind ``OPSG`` whose zstd payload is
the entries' raw BSON, concatenated in oplog order. Its header (readable
without the payload) says which stretch of the oplog it covers::

    {"after_ts": {"t", "i"},   # position before the segment (exclusive)
     "first_ts": {"t", "i"} | null,   # ts of its first entry
     "last_ts": {"t", "i"},    # position after it: its last entry, or a
                               # later internal entry dropped at ingestion
     "count": n, "nbytes": n, ...extra}

Segments of one job chain exactly: each one's ``after_ts`` is the previous
one's ``last_ts`` (``check_chain``). A round that only moved past dropped
internal entries still makes a (count 0) segment, so the chain never breaks.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bson.timestamp import Timestamp

from backupflows.bsonorder import find_field
from backupflows.errors import IntegrityError, OplogError
from backupflows.storage import container

SEGMENT_KIND = b"OPSG"
_u64 = struct.Struct("<Q").unpack_from
_i32 = struct.Struct("<i").unpack_from


def ts_int(ts: Timestamp) -> int:
    """``Timestamp(t, i)`` as ``t << 32 | i`` (optime order = integer order)."""
    return (ts.time << 32) | ts.inc


def ts_of(value: int) -> Timestamp:
    """``t << 32 | i`` as a ``Timestamp``."""
    return Timestamp(value >> 32, value & 0xFFFFFFFF)


def entry_ts(raw: bytes) -> int:
    """``ts`` of a raw oplog entry as ``t << 32 | i`` (BSON stores the
    increment in the low and the seconds in the high 32 bits)."""
    found = find_field(raw, b"ts")
    if found is None or found[0] != 0x11:
        raise OplogError("oplog entry without a Timestamp ts")
    return _u64(raw, found[1])[0]


def _ts_json(ts: Timestamp | None) -> dict[str, int] | None:
    return None if ts is None else {"t": ts.time, "i": ts.inc}


def _ts_from_json(value: Any, what: str) -> Timestamp | None:
    if value is None:
        return None
    try:
        return Timestamp(int(value["t"]), int(value["i"]))
    except (KeyError, TypeError, ValueError):
        raise IntegrityError(f"{what}: bad timestamp {value!r} in the header") from None


@dataclass(frozen=True)
class SegmentHeader:
    """What a segment covers: ``(after_ts, last_ts]``, ``count`` entries."""

    after_ts: Timestamp
    first_ts: Timestamp | None
    last_ts: Timestamp
    count: int
    nbytes: int
    extra: dict[str, Any]


def encode_segment(entries: Sequence[bytes], *, after_ts: Timestamp,
                   last_ts: Timestamp | None = None, **extra: Any) -> bytes:
    """The stored form of ``entries`` (raw, in oplog order) read after
    ``after_ts``; ``last_ts`` defaults to the last entry's ts."""
    first = ts_of(entry_ts(entries[0])) if entries else None
    last = last_ts if last_ts is not None else (
        ts_of(entry_ts(entries[-1])) if entries else after_ts)
    payload = b"".join(entries)
    if ts_int(last) < ts_int(after_ts) or (first and ts_int(first) <= ts_int(after_ts)):
        raise OplogError("segment entries must come after its after_ts")
    header = dict(extra, after_ts=_ts_json(after_ts), first_ts=_ts_json(first),
                  last_ts=_ts_json(last), count=len(entries), nbytes=len(payload))
    return container.pack(SEGMENT_KIND, header, payload)


def encode_round(round_: Any, **extra: Any) -> bytes:
    """``encode_segment`` of a ``source.oplog_reader.Round``."""
    return encode_segment(round_.entries, after_ts=round_.after_ts, last_ts=round_.last_ts,
                          **extra)


def _header(raw: dict[str, Any]) -> SegmentHeader:
    what = "oplog segment"
    known = {"after_ts", "first_ts", "last_ts", "count", "nbytes", "codec", "raw_size"}
    after = _ts_from_json(raw.get("after_ts"), what)
    last = _ts_from_json(raw.get("last_ts"), what)
    if after is None or last is None or not isinstance(raw.get("count"), int):
        raise IntegrityError(f"{what}: header lacks after_ts, last_ts or count")
    return SegmentHeader(after, _ts_from_json(raw.get("first_ts"), what), last, raw["count"],
                         int(raw.get("nbytes", 0)),
                         {k: v for k, v in raw.items() if k not in known})


def segment_header(data: bytes) -> SegmentHeader:
    """The header of a stored segment (decompresses nothing it can avoid:
    use ``container.read_header`` on a stream to skip the payload entirely)."""
    return _header(container.unpack(data, kind=SEGMENT_KIND, what="oplog segment")[0])


def decode_segment(data: bytes) -> Iterator[bytes]:
    """The raw entries of a stored segment, in order; ``IntegrityError`` if
    they do not match the header (count, order, range)."""
    raw_header, payload = container.unpack(data, kind=SEGMENT_KIND, what="oplog segment")
    header = _header(raw_header)
    lo, hi = ts_int(header.after_ts), ts_int(header.last_ts)
    n, prev = 0, lo
    for start, end in _spans(payload):
        entry = payload[start:end]
        ts = entry_ts(entry)
        if ts <= prev or ts > hi:
            raise IntegrityError(f"oplog segment: entry {n} is out of order or out of range")
        prev, n = ts, n + 1
        yield entry
    if n != header.count:
        raise IntegrityError(f"oplog segment: {n} entries, header says {header.count}")


def _spans(payload: bytes) -> Iterator[tuple[int, int]]:
    pos, size = 0, len(payload)
    while pos < size:
        end = pos + (_i32(payload, pos)[0] if size - pos >= 5 else 0)
        if end - pos < 5 or end > size or payload[end - 1] != 0:
            raise IntegrityError(f"oplog segment: corrupt entry length at offset {pos}")
        yield pos, end
        pos = end


def check_chain(headers: Iterable[SegmentHeader], start: Timestamp) -> Timestamp:
    """Check that segments follow each other from ``start`` with no hole or
    overlap; returns the position after the last one."""
    position = start
    for i, h in enumerate(headers):
        if h.after_ts != position:
            raise IntegrityError(f"oplog segment {i} starts after {h.after_ts}, expected after "
                                 f"{position}: the oplog store has a hole or an overlap")
        position = h.last_ts
    return position
