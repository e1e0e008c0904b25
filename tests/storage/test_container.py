"""Stored objects carry a versioned header readable without the payload."""

from __future__ import annotations

import io
import os

import pytest

from backupflows.errors import IntegrityError
from backupflows.storage import container


def test_round_trip_and_header_only_read() -> None:
    payload = os.urandom(1000) + b"x" * 100_000
    data = container.pack(b"OPSG", {"first_ts": 5, "count": 3}, payload)
    assert len(data) < len(payload)  # compressed
    header, out = container.unpack(data, kind=b"OPSG")
    assert out == payload and header["count"] == 3 and header["raw_size"] == len(payload)
    kind, header2 = container.read_header(io.BytesIO(data[:200]))
    assert kind == b"OPSG" and header2 == header


def test_uncompressed_payload() -> None:
    data = container.pack(b"MNFT", {}, b"abc", compress=False)
    assert data.endswith(b"abc")
    assert container.unpack(data)[1] == b"abc"


@pytest.mark.parametrize("damage", [
    lambda d: d[:5],                       # truncated header
    lambda d: b"XYZ" + d[3:],              # bad magic
    lambda d: d[:3] + b"\x09" + d[4:],     # unknown version
    lambda d: d[:-10] + b"\x00" * 10,      # corrupt payload
    lambda d: d[:-1],                      # truncated payload
])
def test_damage_is_detected(damage) -> None:
    data = container.pack(b"BLCK", {"n": 1}, os.urandom(5000))
    with pytest.raises(IntegrityError):
        container.unpack(damage(data))


def test_wrong_kind_is_refused() -> None:
    data = container.pack(b"BLCK", {}, b"x")
    with pytest.raises(IntegrityError, match="expected a SLCE"):
        container.unpack(data, kind=b"SLCE")
