"""The MongoDB wire protocol, as much of it as pymongo 4.x speaks to a 7.0 server.

Requests: ``OP_MSG`` (section kind 0, the command body, and kind 1, document
sequences such as ``documents`` of an insert; the ``checksumPresent`` flag is
tolerated: the 4 trailing CRC-32C bytes are skipped, not verified) and the
legacy ``OP_QUERY`` that drivers still use for the first ``hello``/``isMaster``
of a connection (answered with ``OP_REPLY``). No compression: a client that
asks for it in its handshake is told no compressors are available.

Documents of a kind-1 sequence stay raw ``bytes``: the sandbox stores them as
they arrived. Replies are built with ``build_msg``; callers hand it a body
already encoded, usually spliced together from raw stored documents (see
``raw_array_parts``, ``doc_parts`` and ``doc_from_elements``) so stored documents are never decoded
and re-encoded on the way out.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion

OP_REPLY = 1
OP_QUERY = 2004
OP_COMPRESSED = 2012
OP_MSG = 2013

CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1
EXHAUST_ALLOWED = 1 << 16
_KNOWN_FLAGS = CHECKSUM_PRESENT | MORE_TO_COME | EXHAUST_ALLOWED

MAX_MESSAGE_SIZE = 48_000_000
HEADER = struct.Struct("<iiii")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")

# How the sandbox decodes command bodies: dicts in field order, UUIDs as
# uuid.UUID (subtype 4 both ways), dates out of datetime's range kept exact.
CODEC = CodecOptions(uuid_representation=UuidRepresentation.STANDARD,
                     datetime_conversion=DatetimeConversion.DATETIME_AUTO,
                     tz_aware=False)


class ProtocolError(Exception):
    """The bytes on a connection are not a message we understand: close it."""


@dataclass
class Request:
    """One decoded client message."""

    request_id: int
    op_code: int
    body: dict
    raw_body: bytes
    sequences: dict[str, list[bytes]] = field(default_factory=dict)
    flags: int = 0
    legacy_collection: str = ""

    @property
    def more_to_come(self) -> bool:
        return bool(self.flags & MORE_TO_COME) and self.op_code == OP_MSG

    @property
    def exhaust_allowed(self) -> bool:
        return bool(self.flags & EXHAUST_ALLOWED)


def read_exact(sock, n: int) -> bytes:
    """Read exactly ``n`` bytes; ConnectionError at end of stream."""
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_message(sock) -> tuple[int, int, bytes]:
    """(request id, op code, payload after the header) of the next message."""
    header = read_exact(sock, 16)
    length, request_id, _response_to, op_code = HEADER.unpack(header)
    if length < 16 or length > MAX_MESSAGE_SIZE:
        raise ProtocolError(f"bad message length {length}")
    return request_id, op_code, read_exact(sock, length - 16)


def _bson_at(buf: bytes, pos: int, limit: int) -> tuple[bytes, int]:
    if pos + 5 > limit:
        raise ProtocolError("truncated BSON document")
    size = _I32.unpack_from(buf, pos)[0]
    if size < 5 or pos + size > limit or buf[pos + size - 1] != 0:
        raise ProtocolError("bad BSON document length")
    return bytes(buf[pos:pos + size]), pos + size


def decode_body(raw: bytes) -> dict:
    try:
        return bson.decode(raw, CODEC)
    except Exception as exc:  # any bson error means a malformed message
        raise ProtocolError(f"invalid BSON: {exc}") from None


def parse_op_msg(request_id: int, payload: bytes) -> Request:
    """Decode an OP_MSG payload (flags, sections, optional checksum)."""
    if len(payload) < 5:
        raise ProtocolError("OP_MSG too short")
    flags = _I32.unpack_from(payload, 0)[0] & 0xFFFFFFFF
    if flags & 0xFFFF & ~_KNOWN_FLAGS:
        raise ProtocolError(f"unknown required OP_MSG flag bits {flags:#x}")
    end = len(payload) - (4 if flags & CHECKSUM_PRESENT else 0)
    pos, body_raw, sequences = 4, None, {}
    while pos < end:
        kind = payload[pos]
        pos += 1
        if kind == 0:
            if body_raw is not None:
                raise ProtocolError("OP_MSG with two body sections")
            body_raw, pos = _bson_at(payload, pos, end)
        elif kind == 1:
            pos = _parse_sequence(payload, pos, end, sequences)
        else:
            raise ProtocolError(f"unknown OP_MSG section kind {kind}")
    if body_raw is None:
        raise ProtocolError("OP_MSG without a body section")
    return Request(request_id, OP_MSG, decode_body(body_raw), body_raw, sequences, flags)


def _parse_sequence(payload: bytes, pos: int, end: int,
                    sequences: dict[str, list[bytes]]) -> int:
    if pos + 4 > end:
        raise ProtocolError("truncated document sequence")
    size = _I32.unpack_from(payload, pos)[0]
    seq_end = pos + size
    if size < 5 or seq_end > end:
        raise ProtocolError("bad document sequence length")
    try:
        name_end = payload.index(b"\x00", pos + 4, seq_end)
    except ValueError:
        raise ProtocolError("unterminated sequence identifier") from None
    name = payload[pos + 4:name_end].decode("utf-8", "replace")
    docs = sequences.setdefault(name, [])
    p = name_end + 1
    while p < seq_end:
        doc, p = _bson_at(payload, p, seq_end)
        docs.append(doc)
    return seq_end


def parse_op_query(request_id: int, payload: bytes) -> Request:
    """Decode a legacy OP_QUERY (only commands on ``<db>.$cmd`` are served)."""
    try:
        flags = _I32.unpack_from(payload, 0)[0]
        name_end = payload.index(b"\x00", 4)
    except (struct.error, ValueError):
        raise ProtocolError("malformed OP_QUERY") from None
    collection = payload[4:name_end].decode("utf-8", "replace")
    query_raw, _ = _bson_at(payload, name_end + 9, len(payload))
    body = decode_body(query_raw)
    if "$query" in body and isinstance(body["$query"], dict):
        body = dict(body["$query"])
    db = collection.split(".", 1)[0]
    body.setdefault("$db", db)
    return Request(request_id, OP_QUERY, body, query_raw, {}, flags, collection)


def parse_message(request_id: int, op_code: int, payload: bytes) -> Request:
    if op_code == OP_MSG:
        return parse_op_msg(request_id, payload)
    if op_code == OP_QUERY:
        return parse_op_query(request_id, payload)
    raise ProtocolError(f"unsupported op code {op_code}")


_REQUEST_IDS = iter(range(1, 1 << 62))


def build_msg(response_to: int, body: bytes, flags: int = 0) -> bytes:
    """An OP_MSG reply carrying the encoded ``body`` document."""
    length = 16 + 4 + 1 + len(body)
    return (HEADER.pack(length, next(_REQUEST_IDS), response_to, OP_MSG)
            + _I32.pack(flags) + b"\x00" + body)


def build_reply(response_to: int, body: bytes) -> bytes:
    """A legacy OP_REPLY with one document (answers an OP_QUERY command)."""
    length = 16 + 20 + len(body)
    return (HEADER.pack(length, next(_REQUEST_IDS), response_to, OP_REPLY)
            + struct.pack("<iqii", 8, 0, 0, 1) + body)  # flags: AwaitCapable


# -- building documents from raw parts -------------------------------------

def elements(doc: dict) -> bytes:
    """The encoded elements of ``doc`` (its BSON without length and NUL)."""
    return bson.encode(doc, codec_options=CODEC)[4:-1]


def doc_from_elements(*parts: bytes) -> bytes:
    """The document of the encoded elements ``parts`` (one copy of them)."""
    return b"".join(doc_parts(parts))


def doc_parts(parts: Sequence[bytes]) -> list[bytes]:
    """The encoded elements ``parts`` framed as a document (length, elements,
    NUL), still in pieces: whoever joins the outermost document copies each
    piece once. A 16 MB batch was copied about ten times on its way to the
    socket (every level of nesting concatenated it again)."""
    return [_I32.pack(5 + sum(map(len, parts))), *parts, b"\x00"]


def element(name: str, type_byte: int, value: bytes) -> bytes:
    return bytes((type_byte,)) + name.encode() + b"\x00" + value


def element_parts(name: str, type_byte: int, value: list[bytes]) -> list[bytes]:
    """``element`` of a value in pieces (``doc_parts``), still in pieces."""
    return [bytes((type_byte,)) + name.encode() + b"\x00", *value]


def raw_array_parts(docs: list[bytes]) -> list[bytes]:
    """A BSON array of the raw documents ``docs``, in pieces (``doc_parts``):
    the documents are not copied here."""
    parts: list[bytes] = []
    for i, d in enumerate(docs):
        parts.append(b"\x03" + str(i).encode() + b"\x00")
        parts.append(d)
    return doc_parts(parts)


def int64(value: int) -> bytes:
    return _I64.pack(value)


def string(value: str) -> bytes:
    data = value.encode()
    return _I32.pack(len(data) + 1) + data + b"\x00"


def raw_array_documents(raw: bytes, name: str) -> list[bytes] | None:
    """The embedded documents of array field ``name`` of a raw document, as the
    exact bytes received (None when the field is absent or not an array of
    documents)."""
    from backupflows.bsonorder import find_field
    found = find_field(raw, name.encode())
    if found is None or found[0] != 0x04:
        return None
    pos = found[1]
    end = pos + _I32.unpack_from(raw, pos)[0] - 1
    pos += 4
    docs = []
    while pos < end:
        if raw[pos] != 0x03:
            return None
        value = raw.index(b"\x00", pos + 1) + 1
        size = _I32.unpack_from(raw, value)[0]
        docs.append(bytes(raw[value:value + size]))
        pos = value + size
    return docs
