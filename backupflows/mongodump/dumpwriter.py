"""Writing a mongodump directory that ``mongorestore --dir`` reads.

Each collection becomes ``<db>/<stem>.bson`` and ``<db>/<stem>.metadata.json``
(``.gz`` added to both with ``gzip=True``, as ``mongodump --gzip`` does),
with ``<stem>`` chosen as mongodump does (:mod:`names`). A view gets only its
metadata; a time series its metadata under its own name and its buckets in
``system.buckets.<name>.bson``. Every file is written under a temporary name,
fsynced and renamed, the data file before the metadata file, so a reader never
sees a partial file. Documents are streamed: memory does not depend on the
collection's size.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

from backupflows.mongodump.errors import DumpFormatError
from backupflows.mongodump.fileio import atomic_write, fsync_dir
from backupflows.mongodump.metadata import CollectionMeta
from backupflows.mongodump.names import check_db_name, collection_file_stem

_LEN = struct.Struct("<i")


def check_raw_document(doc: bytes, what: str) -> None:
    """Cheap framing check of one raw BSON document about to be written."""
    if len(doc) < 5 or _LEN.unpack_from(doc)[0] != len(doc) or doc[-1] != 0:
        raise DumpFormatError(f"{what} is not a framed BSON document "
                              f"({len(doc)} bytes, length prefix and terminator checked)")


class DumpWriter:
    """Writes collections into a mongodump directory at ``path``."""

    def __init__(self, path: str | Path, gzip: bool = False, fsync: bool = True) -> None:
        self.path = Path(path)
        self.gzip = gzip
        self.fsync = fsync
        self.path.mkdir(parents=True, exist_ok=True)

    def _ext(self, ext: str) -> str:
        return ext + ".gz" if self.gzip else ext

    def db_dir(self, db: str) -> Path:
        check_db_name(db)
        folder = self.path / db
        if not folder.is_dir():
            folder.mkdir()
            if self.fsync:
                fsync_dir(self.path)
        return folder

    def bson_path(self, meta: CollectionMeta) -> Path:
        return self.path / meta.db / (collection_file_stem(meta.data_name) + self._ext(".bson"))

    def metadata_path(self, meta: CollectionMeta) -> Path:
        stem = collection_file_stem(meta.name)
        return self.path / meta.db / (stem + self._ext(".metadata.json"))

    def write_collection(self, meta: CollectionMeta, documents: Iterable[bytes] = ()) -> int:
        """Write one collection's documents (raw BSON) and metadata; the count written."""
        self.db_dir(meta.db)
        count = 0
        if meta.has_data:
            count = self._write_documents(self.bson_path(meta), documents, meta.namespace)
        else:
            for _ in documents:
                raise DumpFormatError(f"{meta.namespace} is a view: it has no documents to write")
        with atomic_write(self.metadata_path(meta), self.gzip, self.fsync) as out:
            out.write(meta.to_json().encode("utf-8"))
        return count

    def write_oplog(self, entries: Iterable[bytes]) -> int:
        """Write ``oplog.bson`` at the top of the dump (gzipped content with ``gzip``,
        under the same name, as ``mongodump --gzip --oplog`` does)."""
        return self._write_documents(self.path / "oplog.bson", entries, "oplog")

    def _write_documents(self, path: Path, documents: Iterable[bytes], what: str) -> int:
        count = 0
        with atomic_write(path, self.gzip, self.fsync) as out:
            for doc in documents:
                check_raw_document(doc, f"document {count} of {what}")
                out.write(doc)
                count += 1
        return count
