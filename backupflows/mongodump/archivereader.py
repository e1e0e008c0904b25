"""Reading a mongodump archive, streaming, with every namespace's CRC checked.

See :mod:`archive` for the layout. A gzipped archive (``--gzip``) is
recognised by its first bytes. Documents are yielded in archive order as
``((db, collection), raw_bson)`` where ``collection`` is the collection that
holds the data (``system.buckets.<name>`` for a time series). A namespace's
CRC is checked when its EOF header is read, so a consumer must treat an error
raised by :meth:`ArchiveReader.documents` as a failure of everything it has
received; at the end, every namespace of the prelude must have been ended.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import bson

from backupflows.mongodump.archive import MAGIC_BYTES, TERMINATOR, NamespaceKey
from backupflows.mongodump.bsonstream import read_body, read_exact
from backupflows.mongodump.crc64 import Crc64
from backupflows.mongodump.errors import ArchiveChecksumError, DumpFormatError
from backupflows.mongodump.fileio import GZIP_MAGIC, READ_ERRORS
from backupflows.mongodump.metadata import BUCKETS_PREFIX, TIMESERIES, CollectionMeta


@dataclass(frozen=True)
class PreludeEntry:
    """One namespace declared in the archive's prelude."""

    db: str
    collection: str
    type: str
    size: int
    metadata: str
    meta: CollectionMeta | None

    @property
    def data_key(self) -> NamespaceKey:
        name = BUCKETS_PREFIX + self.collection if self.type == TIMESERIES else self.collection
        return (self.db, name)


@dataclass
class NamespaceProgress:
    """Documents seen so far for one data namespace."""

    entry: PreludeEntry
    count: int = 0
    bytes: int = 0
    ended: bool = False
    crc: Crc64 | None = None


class _Prepended:
    """A read-only stream that first returns ``head``, then the rest of ``raw``."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self.head, self.raw = head, raw

    def read(self, size: int = -1) -> bytes:
        if self.head:
            data, self.head = (self.head, b"") if size < 0 or size >= len(self.head) \
                else (self.head[:size], self.head[size:])
            return data
        return self.raw.read(size)


class ArchiveReader:
    """Parses the magic number, header and prelude on construction."""

    def __init__(self, fileobj: BinaryIO, validate: bool = False,
                 source: str = "archive") -> None:
        self.source = source
        self.validate = validate
        self._offset = 0
        self.compressed = False
        try:
            self._read_start(fileobj)
        except DumpFormatError:
            raise
        except READ_ERRORS as exc:
            raise DumpFormatError(f"{source}: offset {self._offset}: corrupt or truncated "
                                  f"gzip data: {exc}") from exc

    def _read_start(self, fileobj: BinaryIO) -> None:
        source = self.source
        first = read_exact(fileobj, 4)
        self.compressed = first[:2] == GZIP_MAGIC
        if self.compressed:
            zipped = gzip.GzipFile(fileobj=_Prepended(first, fileobj), mode="rb")  # type: ignore[arg-type]
            self._in: BinaryIO = zipped  # type: ignore[assignment]
            first = self._read(4)
        else:
            self._in = fileobj
            self._offset = len(first)
        if first != MAGIC_BYTES:
            raise DumpFormatError(f"{source}: not a mongodump archive (magic number "
                                  f"{first.hex()} instead of {MAGIC_BYTES.hex()})")
        self.header: dict[str, Any] = self._decode(self._next_document("header"), "header")
        self.prelude: list[PreludeEntry] = self._read_prelude()
        self.progress: dict[NamespaceKey, NamespaceProgress] = {}
        for entry in self.prelude:
            if entry.data_key in self.progress:
                raise DumpFormatError(f"{source}: namespace {'.'.join(entry.data_key)} "
                                      "is twice in the prelude")
            self.progress[entry.data_key] = NamespaceProgress(entry)

    def __iter__(self) -> Iterator[tuple[NamespaceKey, bytes]]:
        return self.documents()

    def documents(self) -> Iterator[tuple[NamespaceKey, bytes]]:
        """Every document in archive order; raises on any corruption or CRC mismatch."""
        try:
            while self._read_block():
                yield from self._block_documents()
        except DumpFormatError:
            raise
        except READ_ERRORS as exc:
            raise DumpFormatError(f"{self.source}: offset {self._offset}: corrupt or "
                                  f"truncated gzip data: {exc}") from exc
        self._check_complete()

    # -- low level ---------------------------------------------------------

    def _read(self, size: int) -> bytes:
        data = read_exact(self._in, size)
        self._offset += len(data)
        return data

    def _where(self) -> str:
        return f"{self.source}{' (uncompressed)' if self.compressed else ''}"

    def _next_document(self, what: str) -> bytes | None:
        """The next document, or None at a terminator; errors at the end of data."""
        offset = self._offset
        prefix = self._read(4)
        if prefix == TERMINATOR:
            return None
        if len(prefix) < 4:
            raise DumpFormatError(f"{self._where()}: offset {offset}: archive ends inside "
                                  f"the {what}")
        doc = read_body(self._in, prefix, self._where(), offset, self.validate)
        self._offset = offset + len(doc)
        return doc

    def _decode(self, doc: bytes | None, what: str) -> dict[str, Any]:
        if doc is None:
            raise DumpFormatError(f"{self._where()}: offset {self._offset - 4}: "
                                  f"terminator where the {what} should be")
        try:
            return bson.decode(doc)
        except Exception as exc:
            raise DumpFormatError(f"{self._where()}: {what} is not valid BSON: {exc}") from exc

    def _read_prelude(self) -> list[PreludeEntry]:
        entries = []
        while (doc := self._next_document("prelude")) is not None:
            entries.append(self._prelude_entry(self._decode(doc, "prelude entry")))
        return entries

    def _prelude_entry(self, doc: dict[str, Any]) -> PreludeEntry:
        db, coll = doc.get("db"), doc.get("collection")
        text, kind = doc.get("metadata", ""), doc.get("type", "") or ""
        if not isinstance(db, str) or not isinstance(coll, str) or not coll \
                or not isinstance(text, str) or not isinstance(kind, str):
            raise DumpFormatError(f"{self._where()}: malformed prelude entry {doc!r}")
        meta = None
        if text:
            meta = CollectionMeta.from_json(text, db, coll, source=f"{self.source} "
                                            f"prelude metadata of {db}.{coll}")
        return PreludeEntry(db, coll, kind or (meta.type if meta else ""),
                            int(doc.get("size") or 0), text, meta)

    # -- blocks ------------------------------------------------------------

    def _read_block(self) -> bool:
        """Read a block header; False at the clean end of the archive."""
        offset = self._offset
        prefix = self._read(4)
        if not prefix:
            return False
        if prefix == TERMINATOR:
            raise DumpFormatError(f"{self._where()}: offset {offset}: consecutive "
                                  "terminators (a block without a header)")
        if len(prefix) < 4:
            raise DumpFormatError(f"{self._where()}: offset {offset}: truncated block header")
        raw = read_body(self._in, prefix, self._where(), offset, self.validate)
        self._offset = offset + len(raw)
        self._block = self._open_block(self._decode(raw, "namespace header"), offset)
        return True

    def _open_block(self, header: dict[str, Any], offset: int) -> NamespaceProgress | None:
        key = (header.get("db"), header.get("collection"))
        name = f"{key[0]}.{key[1]}"
        progress = self.progress.get(key)  # type: ignore[arg-type]
        if progress is None:
            raise DumpFormatError(f"{self._where()}: offset {offset}: namespace {name} "
                                  "is not in the prelude")
        if progress.ended:
            raise DumpFormatError(f"{self._where()}: offset {offset}: block for {name} "
                                  "after its EOF")
        if progress.crc is None:
            progress.crc = Crc64()
        if not header.get("EOF"):
            return progress
        expected = header.get("CRC")
        if not isinstance(expected, int) or expected != progress.crc.signed:
            raise ArchiveChecksumError(
                f"{self._where()}: offset {offset}: CRC mismatch for {name}: the archive says "
                f"{expected}, its {progress.count} documents give {progress.crc.signed}")
        progress.ended = True
        return None

    def _block_documents(self) -> Iterator[tuple[NamespaceKey, bytes]]:
        progress = self._block
        while True:
            offset = self._offset
            doc = self._next_document("block")
            if doc is None:
                return
            if progress is None:
                raise DumpFormatError(f"{self._where()}: offset {offset}: document after "
                                      "an EOF header")
            progress.crc.update(doc)  # type: ignore[union-attr]
            progress.count += 1
            progress.bytes += len(doc)
            yield progress.entry.data_key, doc

    def _check_complete(self) -> None:
        missing = [".".join(key) for key, p in self.progress.items() if not p.ended]
        if missing:
            raise DumpFormatError(f"{self._where()}: archive ends before the EOF of "
                                  f"{', '.join(missing)}")

