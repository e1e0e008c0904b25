"""An independent reader of mongodump archives, written from the spec alone
(mongo-tools ``common/archive/spec.md``), for the restore tests:

    archive   = magic header prelude block*
    magic     = 0x8199e26d as uint32 little-endian
    header    = BSON {concurrent_collections, version, server_version, tool_version}
    prelude   = BSON{db, collection, metadata, size, type}* terminator
    block     = namespace-header BSON-document* terminator
                (namespace-header = {db, collection, EOF: bool, CRC: int64}; an
                 EOF header ends its namespace and carries the CRC-64 (ECMA
                 table, Go's crc64.ECMA) of all the namespace's document bytes)
    terminator = ff ff ff ff

With ``--gzip`` the whole stream is gzipped. Nothing here imports backupflows.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.codec_options import CodecOptions

MAGIC = 0x8199E26D
TERMINATOR = 0xFFFFFFFF
_ECMA_REVERSED = 0xC96C5795D7870F42  # bit-reversed ECMA-182 polynomial (Go's crc64.ECMA)
_DECODE = CodecOptions(document_class=dict, tz_aware=False)


def _table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ _ECMA_REVERSED if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _table()


def crc64(data: bytes, crc: int = 0) -> int:
    """Go's ``crc64.Update(crc, MakeTable(ECMA), data)``."""
    crc = ~crc & 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return ~crc & 0xFFFFFFFFFFFFFFFF


@dataclass
class Archive:
    header: dict[str, Any]
    prelude: list[dict[str, Any]]
    documents: dict[str, list[bytes]] = field(default_factory=dict)  # "db.coll" -> raw docs
    crc: dict[str, int] = field(default_factory=dict)                 # from EOF headers
    eof: list[str] = field(default_factory=list)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise ValueError(f"truncated archive at offset {self.pos}")
        return struct.unpack_from("<I", self.data, self.pos)[0]

    def doc(self) -> bytes:
        n = struct.unpack_from("<i", self.data, self.pos)[0]
        if n < 5 or self.pos + n > len(self.data) or self.data[self.pos + n - 1] != 0:
            raise ValueError(f"bad BSON length {n} at offset {self.pos}")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw

    def terminator(self) -> bool:
        if self.u32() == TERMINATOR:
            self.pos += 4
            return True
        return False


def read_archive(data: bytes) -> Archive:
    """Parse (and gunzip) an archive; checks every namespace's CRC."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    r = _Reader(data)
    if r.u32() != MAGIC:
        raise ValueError("bad magic number")
    r.pos = 4
    out = Archive(bson.decode(r.doc(), _DECODE), [])
    while not r.terminator():
        out.prelude.append(bson.decode(r.doc(), _DECODE))
    running: dict[str, int] = {}
    while r.pos < len(data):
        head = bson.decode(r.doc(), _DECODE)
        ns = f"{head['db']}.{head['collection']}"
        if head["EOF"]:
            if not r.terminator():
                raise ValueError(f"{ns}: EOF header not followed by the terminator")
            got = running.get(ns, crc64(b""))
            want = head["CRC"] & 0xFFFFFFFFFFFFFFFF
            if got != want:
                raise ValueError(f"{ns}: CRC {got:#x} != {want:#x}")
            out.crc[ns] = want
            out.eof.append(ns)
            continue
        docs = out.documents.setdefault(ns, [])
        while not r.terminator():
            raw = r.doc()
            docs.append(raw)
            running[ns] = crc64(raw, running.get(ns, 0))
    return out
