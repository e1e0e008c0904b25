"""CRC-64 as mongodump's archive uses it.

mongo-tools hashes each namespace's documents with Go's ``hash/crc64`` and
``crc64.MakeTable(crc64.ECMA)``: the reflected ECMA-182 polynomial
(0xC96C5795D7870F42), initial value and final XOR all ones. That is the
CRC-64/XZ of the RevEng catalogue (check value of ``b"123456789"``:
0x995DC9BBDF1939FA). The EOF header stores it as a signed int64.

``fastcrc`` (a compiled extension) is used when installed; otherwise a
table-driven pure-Python implementation gives the same values, slowly.
"""

from __future__ import annotations

_POLY_REFLECTED = 0xC96C5795D7870F42
_MASK = 0xFFFFFFFFFFFFFFFF


def _make_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def crc64_xz_pure(data: bytes | bytearray, initial: int = 0) -> int:
    """CRC-64/XZ of ``data`` continuing from the checksum ``initial``."""
    crc = initial ^ _MASK
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK


try:  # pragma: no cover - which branch runs depends on the environment
    from fastcrc import crc64 as _fast

    def crc64_xz(data: bytes, initial: int = 0) -> int:
        """CRC-64/XZ of ``data`` continuing from the checksum ``initial``."""
        return _fast.xz(data, initial=initial)

    ACCELERATED = True
except ImportError:  # pragma: no cover
    crc64_xz = crc64_xz_pure
    ACCELERATED = False


def to_signed(value: int) -> int:
    """The unsigned 64-bit checksum as Go's ``int64(sum)`` stores it."""
    return value - (1 << 64) if value >= 1 << 63 else value


class Crc64:
    """Running CRC-64/XZ of a stream of byte strings."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | bytearray) -> None:
        self.value = crc64_xz(data, self.value)

    @property
    def signed(self) -> int:
        return to_signed(self.value)
