"""Reading a mongodump directory: ``<db>/<coll>.bson`` + ``<coll>.metadata.json``.

``DumpReader`` lists what mongorestore would restore from a dump directory
(``mongorestore/filepath.go``) and streams each collection's raw documents:

- at the top: one directory per database, and ``oplog.bson`` (kept apart as
  :attr:`DumpReader.oplog_path`); any other file is skipped;
- in a database directory: ``<name>.bson`` (or the legacy ``.bin``) and
  ``<name>.metadata.json``, each optionally ``.gz`` as ``mongodump --gzip``
  writes them; file names are percent-escaped and long ones hashed (see
  :mod:`names`); a time-series collection has ``<name>.metadata.json`` with
  ``"type":"timeseries"`` and its buckets in ``system.buckets.<name>.bson``;
  a view has metadata and no ``.bson``;
- skipped, like mongorestore does in a full restore, each reported in
  :attr:`DumpReader.skipped` with its reason: subdirectories, files of other
  kinds (including our own unfinished ``.tmp`` files), ``$``-prefixed special
  files of single-database dumps (``$admin.system.users.bson`` ...),
  ``system.profile``, and ``system.indexes`` when metadata files exist.

By default compressed and plain files are both accepted (``gzip=None``); a
collection present in both forms is an error. ``gzip=True`` or ``False``
reads only that form, as ``mongorestore [--gzip]`` does, and skips the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backupflows.mongodump.bsonstream import iter_documents
from backupflows.mongodump.errors import DumpFormatError
from backupflows.mongodump.fileio import READ_ERRORS, is_gzip_file, open_read, read_text
from backupflows.mongodump.metadata import TIMESERIES, CollectionMeta
from backupflows.mongodump.names import (
    collection_file_stem,
    is_truncated_stem,
    unescape_collection_name,
)

_SUFFIXES = ((".metadata.json.gz", "metadata", True), (".metadata.json", "metadata", False),
             (".bson.gz", "bson", True), (".bson", "bson", False), (".bin", "bson", False))


@dataclass(frozen=True)
class Skipped:
    """A file or directory of the dump that is not restored, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class DumpNamespace:
    """One collection (or view) of a dump directory."""

    db: str
    name: str
    meta: CollectionMeta | None
    bson_path: Path | None
    metadata_path: Path | None

    @property
    def namespace(self) -> str:
        return f"{self.db}.{self.name}"

    @property
    def data_name(self) -> str:
        """The collection holding the documents (``system.buckets.*`` of a time series)."""
        return self.meta.data_name if self.meta else self.name

    def documents(self, validate: bool = False) -> Iterator[bytes]:
        """The raw BSON documents of the collection, streamed in file order."""
        if self.bson_path is None:
            return iter(())
        return stream_bson_file(self.bson_path, validate=validate)


def stream_bson_file(path: Path, validate: bool = False,
                     compressed: bool | None = None) -> Iterator[bytes]:
    """Raw documents of a ``.bson`` (or gzipped) file; errors name file and offset."""
    if compressed is None:
        compressed = path.name.endswith(".gz")
    stream = open_read(path, compressed)
    label = f"{path} (uncompressed)" if compressed else str(path)
    try:
        yield from iter_documents(stream, label, validate)
    except DumpFormatError:
        raise
    except READ_ERRORS as exc:
        raise DumpFormatError(f"{path}: corrupt or truncated gzip data: {exc}") from exc
    finally:
        stream.close()


class DumpReader:
    """The namespaces of a mongodump directory, in (database, name) order."""

    def __init__(self, path: str | Path, gzip: bool | None = None) -> None:
        self.path = Path(path)
        self.gzip = gzip
        self.skipped: list[Skipped] = []
        self.oplog_path: Path | None = None
        self.namespaces: list[DumpNamespace] = []
        if not self.path.is_dir():
            raise DumpFormatError(f"{self.path}: not a dump directory")
        self._scan()

    def __iter__(self) -> Iterator[DumpNamespace]:
        return iter(self.namespaces)

    def get(self, db: str, name: str) -> DumpNamespace:
        for ns in self.namespaces:
            if ns.db == db and ns.name == name:
                return ns
        raise KeyError(f"{db}.{name}")

    def oplog(self, validate: bool = False) -> Iterator[bytes]:
        """Entries of the dump's ``oplog.bson`` (gzipped or not), if it has one."""
        if self.oplog_path is None:
            return iter(())
        compressed = is_gzip_file(self.oplog_path)
        return stream_bson_file(self.oplog_path, validate, compressed)

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append(Skipped(path, reason))

    def _scan(self) -> None:
        for entry in sorted(self.path.iterdir()):
            if entry.is_dir():
                self._scan_db(entry.name, entry)
            elif entry.name in ("oplog.bson", "oplog.bson.gz") and self.oplog_path is None:
                self.oplog_path = entry
            else:
                self._skip(entry, "not a database directory or oplog.bson")
        self.namespaces.sort(key=lambda ns: (ns.db, ns.name))

    def _scan_db(self, db: str, folder: Path) -> None:
        metas: dict[str, Path] = {}
        bsons: dict[str, Path] = {}
        for entry in sorted(folder.iterdir()):
            self._classify(entry, metas, bsons)
        claimed: set[str] = set()
        for stem, path in metas.items():
            self._add_with_metadata(db, stem, path, bsons, claimed)
        for stem, path in bsons.items():
            if stem not in claimed:
                self._add_without_metadata(db, stem, path, bool(metas))

    def _classify(self, entry: Path, metas: dict[str, Path], bsons: dict[str, Path]) -> None:
        if entry.is_dir():
            self._skip(entry, "subdirectory of a database directory")
            return
        match = _match_suffix(entry.name)
        if match is None:
            self._skip(entry, "not a .bson or .metadata.json file")
            return
        suffix, kind, compressed = match
        if self.gzip is not None and compressed != self.gzip:
            self._skip(entry, "compressed file, gzip=False" if compressed
                       else "uncompressed file, gzip=True")
            return
        stem = entry.name[: -len(suffix)]
        found = metas if kind == "metadata" else bsons
        if stem in found:
            raise DumpFormatError(f"{entry.parent}: both {found[stem].name} and {entry.name}")
        found[stem] = entry

    def _add_with_metadata(self, db: str, stem: str, path: Path, bsons: dict[str, Path],
                           claimed: set[str]) -> None:
        file_name = None if is_truncated_stem(stem) else _unescape(stem, path)
        meta = CollectionMeta.from_json(read_text(path), db, file_name, source=str(path))
        if meta.name == "system.profile":
            self._skip(path, "system.profile is never restored")
            return
        data_stem = collection_file_stem(meta.data_name)
        if data_stem not in bsons and meta.type != TIMESERIES and stem in bsons:
            data_stem = stem  # written by a tool that escapes names differently
        bson_path = bsons.get(data_stem)
        if bson_path is not None:
            claimed.add(data_stem)
        self.namespaces.append(DumpNamespace(db, meta.name, meta, bson_path, path))

    def _add_without_metadata(self, db: str, stem: str, path: Path, has_metadata: bool) -> None:
        if is_truncated_stem(stem):
            raise DumpFormatError(f"{path}: truncated file name and no metadata file "
                                  "giving the collection's name")
        name = _unescape(stem, path)
        if name.startswith("$"):
            self._skip(path, "special file of a single-database dump")
        elif name == "system.profile":
            self._skip(path, "system.profile is never restored")
        elif name == "system.indexes" and has_metadata:
            self._skip(path, "indexes are restored from the .metadata.json files")
        else:
            self.namespaces.append(DumpNamespace(db, name, None, path, None))


def _match_suffix(file_name: str) -> tuple[str, str, bool] | None:
    for suffix, kind, compressed in _SUFFIXES:
        if file_name.endswith(suffix) and len(file_name) > len(suffix):
            return suffix, kind, compressed
    return None


def _unescape(stem: str, path: Path) -> str:
    try:
        return unescape_collection_name(stem)
    except DumpFormatError as exc:
        raise DumpFormatError(f"{path}: {exc}") from exc
