"""Point in time: a snapshot rolled forward with the stored oplog.

``roll_forward`` builds a temporary head (on the restore worker's disk):

1. the snapshot's selected namespaces, created as the manifest records them
   (type, UUID, options, indexes, in-progress index builds); a collection
   whose documents the oplog may move wholesale (drop, rename, ...) is
   bulk-loaded, its stream verified against the manifest's count and content
   hash while it loads; of every other collection only the documents the
   entries touch are loaded (``sparse``; block hashes are checked by every
   read);
2. the head's optime set to the snapshot's;
3. the stored segments after the snapshot's optime applied with the
   ``Applier``, entries with ``snapshot optime < ts <= point`` only (the
   documented boundary), filtered by the deployment's namespace filter and
   the restore's selection (``backupflows.jobs.entryfilter``: renames out of
   the selection become drops). A selective restore first scans those
   entries for renames INTO the selection: their sources (transitively) are
   loaded and followed too, so a renamed-in collection arrives with its
   documents; only the selection is delivered.

The namespaces delivered are the head's: a sparse collection as the
snapshot merged with the head's versions of its touched documents, a whole
one from the head. Expected counts and hashes come from the head (kept by
the Applier), corrected for sparse collections by the manifest's. Documents
stream; memory grows with the number of touched documents (their keys) at
most, not with the snapshot.

Known limit: a multi-entry transaction whose first entries precede the
snapshot's optime and whose commit follows it is applied without those
first entries (the snapshot does not carry the head's pending transactions).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import bson
from bson.codec_options import CodecOptions, DatetimeConversion

from backupflows.bsonorder import find_field
from backupflows.contenthash import ContentHash
from backupflows.errors import OplogError, RestoreError
from backupflows.head.store import HeadStore
from backupflows.jobs.entryfilter import filter_entries
from backupflows.mongodump.metadata import BUCKETS_PREFIX
from backupflows.oplog.applier import Applier, ApplyStats
from backupflows.oplog.segments import decode_segment, entry_ts
from backupflows.restore import sparse
from backupflows.restore.plan import Namespace, from_head
from backupflows.restore.select import Selection
from backupflows.restore.source import Source, format_point
from backupflows.restore.verify import Checked
from backupflows.source.namespaces import NamespaceFilter
from backupflows.storage import snapshot as snap
from backupflows.storage.backends import Backend, ObjectNotFound
from backupflows.storage.blockstore import BlockStore
from backupflows.storage.manifest import CollectionEntry, Manifest

LOAD_CHUNK = 5000
_LOSSLESS = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS)
Report = Callable[[str, dict[str, int]], None]


@dataclass
class RollForward:
    """What a roll-forward did."""

    loaded: int = 0            # documents loaded into the temporary head
    sparse: int = 0            # collections loaded sparsely (touched documents only)
    entries: int = 0
    seconds_load: float = 0.0
    seconds_apply: float = 0.0

    @property
    def rate(self) -> float:
        return self.entries / self.seconds_apply if self.seconds_apply > 0 else 0.0


class EntryFilter:
    """The deployment's filter and the selection together (``filter_entries``
    protocol); ``extra`` namespaces are followed too (sources of renames into
    the selection)."""

    def __init__(self, deployment: NamespaceFilter, selection: Selection,
                 extra: set[str] | None = None) -> None:
        self.deployment, self.selection = deployment, selection
        self.extra = extra or set()

    @property
    def is_everything(self) -> bool:
        return self.deployment.is_everything and self.selection.is_everything

    def matches_ns(self, ns: str) -> bool:
        return self.deployment.matches_ns(ns) and (self.selection.matches_ns(ns)
                                                   or ns in self.extra)


def renames(entries: Iterable[bytes]) -> list[tuple[str, str]]:
    """``(from, to)`` of the renameCollection commands among ``entries``
    (top level and inside applyOps); other entries are not decoded."""
    out: list[tuple[str, str]] = []
    for raw in entries:
        found = find_field(raw, b"op")
        if found is None or raw[found[1] + 4:found[1] + 6] != b"c\x00":
            continue
        doc = bson.decode(raw, _LOSSLESS)
        for op in [doc, *(doc.get("o", {}).get("applyOps") or [])]:
            o = op.get("o") or {}
            if op.get("op") == "c" and "renameCollection" in o:
                out.append((str(o["renameCollection"]), str(o.get("to", ""))))
    return out


def rename_sources(renamed: list[tuple[str, str]], selection: Selection) -> set[str]:
    """Namespaces outside the selection whose documents reach it by renames."""
    needed: set[str] = set()
    changed = True
    while changed:
        changed = False
        for src, dst in renamed:
            if (selection.matches_ns(dst) or dst in needed) and not selection.matches_ns(src) \
                    and src not in needed:
                needed.add(src)
                changed = True
    return needed


def _quiet(step: str, counts: dict[str, int]) -> None:
    pass


def selected(m: Manifest, filt: EntryFilter) -> list[CollectionEntry]:
    """The manifest's entries to load (time-series buckets follow their view)."""
    out = []
    for c in m.collections:
        name = c.name[len(BUCKETS_PREFIX):] if c.name.startswith(BUCKETS_PREFIX) else c.name
        if filt.selection.matches_ns(f"{c.db}.{name}") or c.ns in filt.extra:
            out.append(c)
    return out


def roll_forward(head_path: Path, store: BlockStore, backend: Backend, m: Manifest,
                 source: Source, selection: Selection, deployment_filter: NamespaceFilter,
                 *, batch_size: int = 1000, report: Report = _quiet
                 ) -> tuple[HeadStore, RollForward, list[Namespace]]:
    """The temporary head at ``source.point`` (see the module docstring) and
    the namespaces to deliver from it; the caller closes the head and removes
    its file."""
    if source.point is None:
        raise RestoreError("roll_forward needs a point in time")
    stats = RollForward()
    filt = EntryFilter(deployment_filter, selection)
    lo, hi = source.snapshot_ts, source.point
    if not selection.is_everything:
        filt.extra = rename_sources([r for seg in source.segments for r in renames(
            _window(_segment(backend, seg.name), lo, hi))], selection)
    touched = sparse.scan(e for seg in source.segments for e in filter_entries(
        _window(_segment(backend, seg.name), lo, hi), filt))
    head = HeadStore(head_path)
    try:
        t0 = time.monotonic()
        loaded = _load(head, store, m, filt, touched, report, stats)
        with head.transaction() as w:
            w.set_optime(source.snapshot_ts, m.optime_t)
        stats.seconds_load = time.monotonic() - t0
        t0 = time.monotonic()
        stats.entries = _apply(head, backend, source, filt, batch_size, report)
        stats.seconds_apply = time.monotonic() - t0
        return head, stats, _namespaces(head, store, m, filt, touched, loaded)
    except BaseException:
        head.close()
        raise


def _load(head: HeadStore, store: BlockStore, m: Manifest, filt: EntryFilter,
          touched: sparse.Touched, report: Report, stats: RollForward
          ) -> dict[str, ContentHash]:
    """Create every selected namespace; load whole the ones DDL may move,
    only the touched documents of the others. Returns what was loaded
    sparsely, per namespace."""
    loaded: dict[str, ContentHash] = {}
    for c in selected(m, filt):
        head.ensure_collection(c.db, c.name, uuid=c.uuid, type=c.type, options=c.options,
                               indexes=c.indexes)
        if c.builds:
            with head.transaction() as w:
                coll = w.catalog.get(c.db, c.name)
                assert coll is not None
                for build_uuid, specs in c.builds:
                    w.catalog.start_build(coll, build_uuid, specs)
        if not c.holds_documents:
            continue
        if touched.is_whole(c.ns):
            stats.loaded += _load_whole(head, store, m, c, report, stats.loaded)
        else:
            loaded[c.ns] = sparse.load_sparse(head, store, c, touched.keys.get(c.ns, set()))
            stats.loaded += loaded[c.ns].count
            stats.sparse += 1
    return loaded


def _load_whole(head: HeadStore, store: BlockStore, m: Manifest, c: CollectionEntry,
                report: Report, before: int) -> int:
    checked = Checked(snap.read_entry(store, c, prefetch=4),
                      ContentHash.from_hex(c.count, c.hash), f"snapshot {m.snapshot}: {c.ns}")
    docs = iter(checked)
    n = 0
    while chunk := list(islice(docs, LOAD_CHUNK)):
        head.load_slice(c.db, c.name, chunk)
        n += len(chunk)
        report("load", {"docs": before + n})
    checked.check()
    return n


def _namespaces(head: HeadStore, store: BlockStore, m: Manifest, filt: EntryFilter,
                touched: sparse.Touched, loaded: dict[str, ContentHash]) -> list[Namespace]:
    """What to deliver: sparse collections merged with the snapshot, the rest
    from the head."""
    entries = {c.ns: c for c in selected(m, filt)}
    heads = {n.db + "." + n.name: n for n in from_head(head)}
    out = []
    for c in head.collections():
        if c.ns in loaded:
            out.append(sparse.merged_namespace(head, c, entries[c.ns], store,
                                               touched.keys.get(c.ns, set()), loaded[c.ns]))
        else:
            out.append(heads[c.ns])
    return out


def _apply(head: HeadStore, backend: Backend, source: Source, filt: EntryFilter,
           batch_size: int, report: Report) -> int:
    assert source.point is not None
    lo, hi = source.snapshot_ts, source.point
    applied = [0]

    def on_batch(stats: ApplyStats) -> None:
        report("apply", {"entries": applied[0] + stats.entries})

    applier = Applier(head, progress=on_batch)
    for seg in source.segments:
        entries = _window(_segment(backend, seg.name), lo, hi)
        try:
            applied[0] += applier.apply(filter_entries(entries, filt),
                                        batch_size=batch_size).entries
        except OplogError as exc:
            raise RestoreError(f"rolling forward to {format_point(hi)}: {exc}") from exc
    return applied[0]


def _segment(backend: Backend, name: str) -> Iterator[bytes]:
    try:
        data = backend.get(name)
    except ObjectNotFound:
        raise RestoreError(f"oplog segment {name} is missing from the store") from None
    return decode_segment(data)


def _window(entries: Iterator[bytes], lo: int, hi: int) -> Iterator[bytes]:
    for raw in entries:
        ts = entry_ts(raw)
        if ts > hi:
            return
        if ts > lo:
            yield raw
