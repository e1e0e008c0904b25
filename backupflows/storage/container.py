"""The envelope of every object backupflows stores: a small versioned header,
then a zstd-compressed payload.

Layout (all integers little-endian)::

    magic   b"BFO"        3 bytes
    version 1             1 byte   (format of this envelope)
    kind    4 ASCII bytes          b"SLCE" slice, b"OPSG" oplog segment,
                                   b"BLCK" block, b"MNFT" manifest, ...
    hlen    uint32                 length of the header
    header  JSON object (utf-8)    what a reader needs without the payload:
                                   counts, optimes, hashes, the payload codec
    payload                        zstd frame (codec "zstd") or raw ("none")

``read_header`` reads only the first bytes, so catalog repair and integrity
tools can list what an object holds without decompressing it.
"""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

import zstandard

from backupflows.errors import IntegrityError

MAGIC = b"BFO"
VERSION = 1
_FIXED = struct.Struct("<3sB4sI")


def pack(kind: bytes, header: dict[str, Any], payload: bytes, *, level: int = 3,
         compress: bool = True) -> bytes:
    """Envelope ``payload`` (compressed with zstd unless ``compress`` is false)."""
    if len(kind) != 4:
        raise ValueError("kind must be 4 bytes")
    header = dict(header, codec="zstd" if compress else "none", raw_size=len(payload))
    body = zstandard.ZstdCompressor(level=level, write_checksum=True).compress(payload) if compress else payload
    hjson = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return _FIXED.pack(MAGIC, VERSION, kind, len(hjson)) + hjson + body


def _parse_fixed(prefix: bytes, what: str) -> tuple[bytes, int]:
    if len(prefix) < _FIXED.size:
        raise IntegrityError(f"{what}: truncated object (no header)")
    magic, version, kind, hlen = _FIXED.unpack_from(prefix)
    if magic != MAGIC:
        raise IntegrityError(f"{what}: not a backupflows object (bad magic)")
    if version != VERSION:
        raise IntegrityError(f"{what}: unsupported object format version {version}")
    return kind, hlen


def unpack(data: bytes, *, kind: bytes | None = None, what: str = "object",
           ) -> tuple[dict[str, Any], bytes]:
    """Header and decompressed payload of an enveloped object."""
    got, hlen = _parse_fixed(data, what)
    if kind is not None and got != kind:
        raise IntegrityError(f"{what}: expected a {kind.decode()} object, found {got!r}")
    start = _FIXED.size
    try:
        header = json.loads(data[start:start + hlen])
    except ValueError as exc:
        raise IntegrityError(f"{what}: corrupt header: {exc}") from None
    body = data[start + hlen:]
    if header.get("codec") == "zstd":
        try:
            payload = zstandard.ZstdDecompressor().decompress(
                body, max_output_size=header.get("raw_size", 0))
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what}: corrupt payload: {exc}") from None
    else:
        payload = body
    if len(payload) != header.get("raw_size", len(payload)):
        raise IntegrityError(f"{what}: payload size does not match its header")
    return header, payload


def read_header(stream: BinaryIO, *, what: str = "object") -> tuple[bytes, dict[str, Any]]:
    """Kind and header of an object, reading only its first bytes."""
    kind, hlen = _parse_fixed(stream.read(_FIXED.size), what)
    raw = stream.read(hlen)
    try:
        return kind, json.loads(raw)
    except ValueError as exc:
        raise IntegrityError(f"{what}: corrupt header: {exc}") from None
