"""The standard mongodump formats, read and written as streams of raw BSON.

- :class:`CollectionMeta`: ``<coll>.metadata.json`` exactly as mongodump 100.x
  writes it (and older variants read);
- :class:`DumpReader` / :class:`DumpWriter`: the dump directory layout
  (``<db>/<coll>.bson`` + metadata, ``--gzip`` variants, escaped names);
- :class:`ArchiveReader` / :class:`ArchiveWriter`: the ``--archive`` format
  (prelude, interleaved namespace blocks, per-namespace CRC-64, ``--gzip``).

Corrupt input raises :class:`DumpFormatError` naming the file and offset.
"""

from backupflows.mongodump.archive import ArchiveWriter
from backupflows.mongodump.archivereader import ArchiveReader, PreludeEntry
from backupflows.mongodump.dumpdir import DumpNamespace, DumpReader, Skipped, stream_bson_file
from backupflows.mongodump.dumpwriter import DumpWriter
from backupflows.mongodump.errors import ArchiveChecksumError, DumpFormatError
from backupflows.mongodump.metadata import COLLECTION, TIMESERIES, VIEW, CollectionMeta
from backupflows.mongodump.names import collection_file_stem, escape_collection_name

__all__ = [
    "COLLECTION", "TIMESERIES", "VIEW", "ArchiveChecksumError", "ArchiveReader",
    "ArchiveWriter", "CollectionMeta", "DumpFormatError", "DumpNamespace", "DumpReader",
    "DumpWriter", "PreludeEntry", "Skipped", "collection_file_stem",
    "escape_collection_name", "stream_bson_file",
]
