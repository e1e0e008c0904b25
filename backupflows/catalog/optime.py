"""Oplog optimes packed into one signed 64-bit integer for the catalog.

A BSON ``Timestamp(t, i)`` becomes ``t << 32 | i``: integer order is optime
order, so SQL can compare and sort optimes (``head_ts < oplog_ts``).
``t`` must fit 31 bits (until 2038) for the value to fit a signed BIGINT.
"""

from __future__ import annotations

from typing import TypedDict

from bson.timestamp import Timestamp

_MAX_TIME = 2**31 - 1
_MAX_INC = 2**32 - 1


class OptimeJson(TypedDict):
    """The ``{"t": seconds, "i": increment}`` shape used by ``--json`` output."""

    t: int
    i: int


def pack(ts: Timestamp) -> int:
    """``Timestamp(t, i)`` -> ``t << 32 | i``."""
    if not 0 <= ts.time <= _MAX_TIME:
        raise ValueError(f"optime seconds out of range for the catalog: {ts.time}")
    return (ts.time << 32) | ts.inc


def unpack(value: int) -> Timestamp:
    """``t << 32 | i`` -> ``Timestamp(t, i)``."""
    if value < 0:
        raise ValueError(f"packed optime must not be negative: {value}")
    return Timestamp(value >> 32, value & _MAX_INC)


def pack_optional(ts: Timestamp | None) -> int | None:
    """``pack`` that passes ``None`` through."""
    return None if ts is None else pack(ts)


def unpack_optional(value: int | None) -> Timestamp | None:
    """``unpack`` that passes ``None`` through."""
    return None if value is None else unpack(value)


def to_json(value: int | None) -> OptimeJson | None:
    """A packed optime as ``{"t": ..., "i": ...}`` (``None`` stays ``None``)."""
    if value is None:
        return None
    ts = unpack(value)
    return {"t": ts.time, "i": ts.inc}
