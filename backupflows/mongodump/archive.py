"""The mongodump archive format (``mongodump --archive``, ``mongorestore --archive``).

Layout (mongo-tools ``common/archive/spec.md`` and the Go code beside it)::

    magic    0x8199e26d as 4 little-endian bytes (6d e2 99 81)
    header   {concurrent_collections: int32, version: "0.1",
              server_version: str, tool_version: str}
    prelude  one document per namespace:
             {db, collection, metadata: <the .metadata.json text>, size: int32, type}
             then the terminator ff ff ff ff
    blocks   namespace header {db, collection, EOF: false, CRC: int64 0},
             documents ..., terminator
    EOF      per namespace, once: {db, collection, EOF: true, CRC: int64}, terminator

Blocks of different namespaces interleave; a block header is written when a
namespace's documents follow another's. A namespace that receives no
documents (an empty collection, a view) still gets one empty block and its
EOF, as mongodump writes it (mongorestore creates views on that trigger). A
time series is listed in the prelude under its own name with type
``timeseries``; its blocks are those of ``system.buckets.<name>``. The CRC is
Go's ``crc64.ECMA`` table checksum (CRC-64/XZ, see :mod:`crc64`) of every
document byte of the namespace, stored as a signed int64. With ``--gzip`` the
whole stream is one gzip member.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

import bson
from bson.int64 import Int64

from backupflows.mongodump.crc64 import Crc64
from backupflows.mongodump.dumpwriter import check_raw_document
from backupflows.mongodump.errors import DumpFormatError
from backupflows.mongodump.fileio import GZIP_LEVEL
from backupflows.mongodump.metadata import CollectionMeta

MAGIC = 0x8199E26D
MAGIC_BYTES = MAGIC.to_bytes(4, "little")
TERMINATOR = b"\xff\xff\xff\xff"
FORMAT_VERSION = "0.1"
_CHUNK = 1 << 20  # documents are written and hashed in chunks of about this size
NamespaceKey = tuple[str, str]


def namespace_header(db: str, collection: str, eof: bool = False, crc: int = 0) -> bytes:
    """A block's header (or, with ``eof``, the namespace's EOF header)."""
    return bson.encode({"db": db, "collection": collection, "EOF": eof, "CRC": Int64(crc)})


@dataclass
class _Stream:
    key: NamespaceKey
    db: str
    data_name: str
    crc: Crc64 = field(default_factory=Crc64)
    count: int = 0
    closed: bool = False


class ArchiveWriter:
    """Writes an archive to a binary file object, streaming.

    Declare every namespace with :meth:`add_namespace` first (the prelude is
    written before the first document), then :meth:`write_documents` as often
    as wanted, in any interleaving, and :meth:`finish` (which ends every
    namespace not yet ended). The file object is not closed.
    """

    def __init__(self, fileobj: BinaryIO, gzip: bool = False, *, server_version: str = "",
                 tool_version: str = "backupflows", concurrent_collections: int = 1) -> None:
        self._raw = fileobj
        self._gzip = _gzip_writer(fileobj) if gzip else None
        self._out: BinaryIO = self._gzip or fileobj  # type: ignore[assignment]
        self._header = {"concurrent_collections": int(concurrent_collections),
                        "version": FORMAT_VERSION, "server_version": server_version,
                        "tool_version": tool_version}
        self._prelude: list[bytes] = []
        self._streams: dict[NamespaceKey, _Stream] = {}
        self._started = False
        self._finished = False
        self._current: _Stream | None = None

    def add_namespace(self, meta: CollectionMeta, size: int = 0) -> None:
        """Declare a collection, view or time series (``size``: its bytes, if known)."""
        if self._started:
            raise DumpFormatError("archive prelude already written: add namespaces first")
        key = (meta.db, meta.name)
        data_key = (meta.db, meta.data_name)
        if key in self._streams or any((s.db, s.data_name) == data_key
                                       for s in self._streams.values()):
            raise DumpFormatError(f"namespace {meta.namespace} added twice")
        self._prelude.append(bson.encode({
            "db": meta.db, "collection": meta.name, "metadata": meta.to_json(),
            "size": int(size), "type": meta.type}))
        self._streams[key] = _Stream(key, meta.db, meta.data_name)

    def add_oplog(self) -> None:
        """Declare the oplog stream (``mongodump --oplog``): db "" and collection "oplog"."""
        if self._started:
            raise DumpFormatError("archive prelude already written: add namespaces first")
        self._prelude.append(bson.encode({"db": "", "collection": "oplog", "metadata": "",
                                          "size": 0, "type": ""}))
        self._streams[("", "oplog")] = _Stream(("", "oplog"), "", "oplog")

    def write_documents(self, namespace: CollectionMeta | NamespaceKey,
                        documents: Iterable[bytes]) -> int:
        """Append raw documents to a namespace; returns how many were written."""
        stream = self._stream(namespace)
        self._start()
        pending = bytearray()
        count = 0
        try:
            for doc in documents:
                check_raw_document(doc, f"document {stream.count + count} of {stream.db}."
                                   f"{stream.data_name}")
                if not count:
                    self._switch_to(stream)  # a block header only when data follows
                pending += doc
                count += 1
                if len(pending) >= _CHUNK:
                    self._emit(stream, pending)
        finally:
            self._emit(stream, pending)
            stream.count += count
        return count

    def _emit(self, stream: _Stream, pending: bytearray) -> None:
        if pending:
            self._out.write(pending)
            stream.crc.update(pending)
            pending.clear()

    def end_namespace(self, namespace: CollectionMeta | NamespaceKey) -> None:
        """Write the namespace's EOF header with its CRC; no documents may follow."""
        stream = self._stream(namespace)
        self._start()
        if stream.count == 0 and self._current is not stream:
            self._switch_to(stream)  # mongodump's empty block
        if self._current is not None:
            self._out.write(TERMINATOR)
            self._current = None
        self._out.write(namespace_header(stream.db, stream.data_name, True, stream.crc.signed))
        self._out.write(TERMINATOR)
        stream.closed = True

    def finish(self) -> None:
        """End every open namespace and flush (the gzip member is completed)."""
        if self._finished:
            return
        self._start()
        for stream in self._streams.values():
            if not stream.closed:
                self.end_namespace(stream.key)
        if self._gzip is not None:
            self._gzip.close()
        self._raw.flush()
        self._finished = True

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.finish()

    def _stream(self, namespace: CollectionMeta | NamespaceKey) -> _Stream:
        key = (namespace.db, namespace.name) if isinstance(namespace, CollectionMeta) \
            else namespace
        stream = self._streams.get(key)
        if stream is None:
            raise DumpFormatError(f"namespace {key[0]}.{key[1]} is not in the archive prelude")
        if stream.closed or self._finished:
            raise DumpFormatError(f"namespace {key[0]}.{key[1]} is already ended")
        return stream

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        self._out.write(MAGIC_BYTES)
        self._out.write(bson.encode(self._header))
        for doc in self._prelude:
            self._out.write(doc)
        self._out.write(TERMINATOR)

    def _switch_to(self, stream: _Stream) -> None:
        if self._current is stream:
            return
        if self._current is not None:
            self._out.write(TERMINATOR)
        self._out.write(namespace_header(stream.db, stream.data_name))
        self._current = stream


def _gzip_writer(fileobj: BinaryIO) -> gzip.GzipFile:
    return gzip.GzipFile(filename="", mode="wb", fileobj=fileobj,
                         compresslevel=GZIP_LEVEL, mtime=0)
