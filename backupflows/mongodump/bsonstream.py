"""Streams of raw BSON documents (``.bson`` files, archive blocks).

Documents are yielded as ``bytes``, never decoded, one at a time: memory does
not depend on the size of the stream. Each document's length prefix is
checked against the BSON limits and its last byte must be the 0x00 that ends
every document; with ``validate=True`` every document is also fully decoded
once (in C, by pymongo) to catch a length that lies but happens to land on a
zero byte. Errors name the stream and the byte offset of the document.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import bson
from bson.codec_options import CodecOptions, DatetimeConversion

from backupflows.mongodump.errors import DumpFormatError

MIN_DOC = 5
# The server's BSONObjMaxInternalSize (16 MiB + 16 KiB): oplog entries and
# documents written by mongodump never exceed it.
MAX_DOC = 16 * 1024 * 1024 + 16 * 1024
_LEN = struct.Struct("<i")
_CHECK_OPTIONS = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)


def read_exact(stream: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at the end of the stream."""
    data = stream.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = stream.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def check_length(length: int, source: str, offset: int) -> None:
    if length < MIN_DOC or length > MAX_DOC:
        raise DumpFormatError(
            f"{source}: offset {offset}: {length} is not a valid BSON document length")


def read_body(stream: BinaryIO, prefix: bytes, source: str, offset: int,
              validate: bool = False) -> bytes:
    """The whole document whose 4-byte length ``prefix`` was just read."""
    length = _LEN.unpack(prefix)[0]
    check_length(length, source, offset)
    rest = read_exact(stream, length - 4)
    if len(rest) != length - 4:
        raise DumpFormatError(
            f"{source}: offset {offset}: truncated document (length {length}, "
            f"only {len(rest) + 4} bytes left)")
    if rest[-1] != 0:
        raise DumpFormatError(
            f"{source}: offset {offset}: document of length {length} does not end with 0x00"
            " (corrupt data or a length that lies)")
    doc = prefix + rest
    if validate:
        validate_document(doc, source, offset)
    return doc


def validate_document(doc: bytes, source: str, offset: int) -> None:
    """Decode ``doc`` completely once; raise DumpFormatError if it is not BSON."""
    try:
        bson.decode(doc, _CHECK_OPTIONS)
    except Exception as exc:  # bson raises InvalidBSON, and others on odd input
        raise DumpFormatError(f"{source}: offset {offset}: invalid BSON document: {exc}") from exc


def iter_documents(stream: BinaryIO, source: str, validate: bool = False) -> Iterator[bytes]:
    """Every document of a stream of concatenated BSON documents."""
    offset = 0
    while True:
        prefix = read_exact(stream, 4)
        if not prefix:
            return
        if len(prefix) < 4:
            raise DumpFormatError(
                f"{source}: offset {offset}: truncated document ({len(prefix)} stray bytes at "
                "the end)")
        doc = read_body(stream, prefix, source, offset, validate)
        yield doc
        offset += len(doc)
