"""Offline point-in-time recovery: a mongodump directory plus an oplog file,
replayed into a head, written out as a mongodump directory.

``replay(dump_dir, oplog_file, out_dir)`` loads the dump into a head (a
temporary one unless ``head_path`` is given), applies the oplog entries whose
``ts`` is before ``until`` (like ``mongorestore --oplogLimit``: replay stops at
the first entry at or after the limit), and writes every collection in
``_id`` order with its metadata (indexes, options, UUID). Everything streams:
memory does not grow with the size of the dump or of the oplog.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import bson

from backupflows.bsonorder import find_field
from backupflows.errors import BackupflowsError
from backupflows.head import rawdoc
from backupflows.head.catalog import TIMESERIES, VIEW, Collection
from backupflows.head.store import DEFAULT_ID_INDEX, HeadStore
from backupflows.mongodump import CollectionMeta, DumpReader, DumpWriter, stream_bson_file
from backupflows.mongodump.fromhead import collection_meta, dumped_collections
from backupflows.oplog.applier import Applier, ApplyStats

_LOAD_CHUNK = 5000
_TS_OPTIONS = (b"timeseries", b"expireAfterSeconds")


class ReplayError(BackupflowsError):
    """Bad input to an offline replay (missing files, bad limit, ...)."""


Progress = Callable[[str], None]


@dataclass
class ReplayResult:
    loaded: int = 0
    applied: int = 0
    written: int = 0
    last: str = ""


def parse_until(text: str) -> int:
    """``SECONDS[:INCREMENT]`` (mongorestore's --oplogLimit) as a packed ts."""
    secs, _, inc = text.partition(":")
    try:
        s, i = int(secs), int(inc) if inc else 0
    except ValueError:
        raise ReplayError(f"--until must be SECONDS[:INCREMENT], got {text!r}") from None
    if not (0 <= s < 1 << 32 and 0 <= i < 1 << 32):
        raise ReplayError(f"--until out of range: {text!r}")
    return (s << 32) | i


def _quiet(_: str) -> None:
    pass


def replay(dump_dir: str | os.PathLike[str], oplog_file: str | os.PathLike[str],
           out_dir: str | os.PathLike[str], *, until: int | None = None,
           head_path: str | os.PathLike[str] | None = None, batch_size: int = 1000,
           progress: Progress = _quiet) -> ReplayResult:
    dump, oplog, out = Path(dump_dir), Path(oplog_file), Path(out_dir)
    _check_inputs(dump, oplog, out)
    with tempfile.TemporaryDirectory(prefix="backupflows-replay-") as tmp:
        head = HeadStore(Path(head_path) if head_path else Path(tmp) / "head.db")
        try:
            result = ReplayResult()
            result.loaded = load_dump(head, DumpReader(dump), progress)
            stats = apply_oplog(head, stream_bson_file(oplog), until, batch_size, progress)
            result.applied, result.last = stats.entries, str(head.optime())
            result.written = write_dump(head, out, progress)
            return result
        finally:
            head.close()


def _check_inputs(dump: Path, oplog: Path, out: Path) -> None:
    if not dump.is_dir():
        raise ReplayError(f"dump directory {dump} does not exist")
    if not oplog.is_file():
        raise ReplayError(f"oplog file {oplog} does not exist")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReplayError(f"output {out} exists and is not an empty directory")


# -- dump -> head --

def _raw(doc: dict[str, Any]) -> bytes:
    return bson.encode(doc)


def load_dump(head: HeadStore, reader: DumpReader, progress: Progress = _quiet) -> int:
    """Load every namespace of a dump directory into ``head``; the documents loaded."""
    total = 0
    for ns in reader:
        meta = ns.meta or CollectionMeta(ns.db, ns.name)
        target = _create_namespace(head, meta)
        if target is None:
            continue
        n = 0
        docs = ns.documents()
        while chunk := list(islice(docs, _LOAD_CHUNK)):
            n += head.load_slice(target.db, target.name, chunk)
        total += n
        progress(f"loaded {meta.namespace}: {n} documents")
    return total


def _create_namespace(head: HeadStore, meta: CollectionMeta) -> Collection | None:
    options = _raw(meta.options)
    indexes = [_raw(spec) for spec in meta.indexes]
    if meta.type == VIEW:
        head.ensure_collection(meta.db, meta.name, type=VIEW, options=options, indexes=[])
        return None
    if meta.type == TIMESERIES:
        view = rawdoc.build([rawdoc.element("viewOn", meta.data_name),
                             rawdoc.element("pipeline", [])])
        head.ensure_collection(meta.db, meta.name, type=TIMESERIES, options=view,
                               indexes=indexes)
        return head.ensure_collection(meta.db, meta.data_name, uuid=meta.uuid,
                                      options=options, indexes=[])
    if not indexes and ("clusteredIndex" not in meta.options):
        indexes = [DEFAULT_ID_INDEX]
    return head.ensure_collection(meta.db, meta.name, uuid=meta.uuid, options=options,
                                  indexes=indexes)


# -- oplog -> head --

def _before(entries: Iterable[bytes], until: int | None) -> Iterator[bytes]:
    for raw in entries:
        if until is not None:
            found = find_field(raw, b"ts")
            if found is not None and found[0] == 0x11:
                ts = int.from_bytes(raw[found[1]:found[1] + 8], "little")
                if ts >= until:
                    return
        yield raw


def apply_oplog(head: HeadStore, entries: Iterable[bytes], until: int | None = None,
                batch_size: int = 1000, progress: Progress = _quiet) -> ApplyStats:
    started = time.monotonic()
    last = [started]

    def report(stats: ApplyStats) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0:
            last[0] = now
            rate = stats.entries / max(now - started, 1e-9)
            progress(f"applied {stats.entries} entries ({rate:,.0f}/s), at {stats.last}")

    stats = Applier(head, progress=report).apply(_before(entries, until), batch_size)
    progress(f"applied {stats.entries} oplog entries, head at {head.optime()}")
    return stats


# -- head -> dump --

def write_dump(head: HeadStore, out: Path, progress: Progress = _quiet) -> int:
    """Write every namespace of ``head`` as a mongodump directory."""
    writer = DumpWriter(out, fsync=False)
    total = 0
    for c in dumped_collections(head):
        meta, source = collection_meta(head, c)
        n = writer.write_collection(meta, head.export(source) if source else ())
        total += n
        progress(f"wrote {meta.namespace}: {n} documents")
    return total



