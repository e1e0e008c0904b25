"""The filesystem store: each snapshot is a complete mongodump directory.

``<root>/<deployment>/<snapshot-id>/`` holds ``<db>/<coll>.bson`` and
``<coll>.metadata.json`` (``.gz`` with gzip, as ``mongodump --gzip`` writes
them), so ``mongorestore --dir`` and plain file tools read it. Beside it,
``<snapshot-id>.json`` records the optime and, per collection, the head's
count and content hash (for integrity checks and hard links).

No deduplication (Ops Manager's filesystem store has none), but a collection
whose count and content hash equal the previous snapshot's (and whose head
collection is the same, not recreated) is hard-linked instead of rewritten.
A snapshot is written under a temporary name and renamed into place, so a
killed write never leaves a partial snapshot directory.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupflows.contenthash import ContentHash
from backupflows.errors import IntegrityError, StorageError
from backupflows.head.catalog import Collection
from backupflows.head.export import HeadReader
from backupflows.mongodump import CollectionMeta, DumpReader, DumpWriter
from backupflows.mongodump.fileio import atomic_write, fsync_dir
from backupflows.mongodump.fromhead import collection_meta, dumped_collections

_TS_OPTIONS = (b"timeseries", b"expireAfterSeconds")
TMP_PREFIX = ".tmp-"


@dataclass
class FsSnapshot:
    path: Path
    info: dict[str, Any]
    linked: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    bytes_written: int = 0


def snapshot_dir(root: Path, deployment: str, snapshot_id: int) -> Path:
    return root / deployment / str(snapshot_id)


def write_snapshot(view: HeadReader, root: Path, deployment: str, snapshot_id: int, *,
                   previous: int | None = None, gzip: bool = False) -> FsSnapshot:
    """Write the head seen by ``view`` as snapshot ``snapshot_id``."""
    final = snapshot_dir(root, deployment, snapshot_id)
    if final.exists():
        raise StorageError(f"filesystem snapshot {final} exists already")
    tmp = final.parent / f"{TMP_PREFIX}{snapshot_id}"
    shutil.rmtree(tmp, ignore_errors=True)
    prev = _previous(root, deployment, previous, gzip)
    writer = DumpWriter(tmp, gzip=gzip)
    o = view.optime()
    info: dict[str, Any] = {"snapshot": snapshot_id, "optime_ts": o.ts, "optime_t": o.t,
                            "mark": view.mark(), "gzip": gzip, "collections": {}}
    out = FsSnapshot(final, info)
    for c in dumped_collections(view):
        _write_one(view, writer, c, prev, out)
    (tmp.parent / f"{TMP_PREFIX}{snapshot_id}.json").write_text(json.dumps(info))
    os.replace(tmp.parent / f"{TMP_PREFIX}{snapshot_id}.json", _sidecar(final))
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return out


def _write_one(view: HeadReader, writer: DumpWriter, c: Collection,
               prev: tuple[Path, dict[str, Any]] | None, out: FsSnapshot) -> None:
    meta, source = collection_meta(view, c)
    record: dict[str, Any] = {"db": meta.db, "name": meta.name, "type": meta.type}
    if source is not None:
        h = view.content_hash(source)
        record.update(cid=source.cid, generation=source.generation, count=h.count,
                      hash=h.hexdigest())
    old = prev[1]["collections"].get(meta.namespace) if prev else None
    bson_path = writer.bson_path(meta)
    if source is not None and prev is not None and _unchanged(old, record, source, prev[1]):
        writer.db_dir(meta.db)
        os.link(prev[0] / bson_path.relative_to(writer.path), bson_path)
        _write_metadata(writer, meta)
        out.linked.append(meta.namespace)
    else:
        writer.write_collection(meta, view.export(source) if source is not None else ())
        out.written.append(meta.namespace)
        if meta.has_data:
            out.bytes_written += bson_path.stat().st_size
    out.info["collections"][meta.namespace] = record


def _write_metadata(writer: DumpWriter, meta: CollectionMeta) -> None:
    with atomic_write(writer.metadata_path(meta), writer.gzip, writer.fsync) as f:
        f.write(meta.to_json().encode("utf-8"))


def _unchanged(old: dict[str, Any] | None, new: dict[str, Any], c: Collection,
               prev_info: dict[str, Any]) -> bool:
    return (old is not None and old.get("cid") == new["cid"]
            and c.generation <= prev_info["mark"]
            and (old.get("count"), old.get("hash")) == (new["count"], new["hash"]))


def _previous(root: Path, deployment: str, previous: int | None, gzip: bool
              ) -> tuple[Path, dict[str, Any]] | None:
    if previous is None:
        return None
    path = snapshot_dir(root, deployment, previous)
    try:
        info = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    return (path, info) if path.is_dir() and info.get("gzip") == gzip else None


def _sidecar(path: Path) -> Path:
    return path.parent / f"{path.name}.json"





def remove_snapshot(root: Path, deployment: str, snapshot_id: int) -> None:
    """Delete a snapshot directory and its sidecar (hard-linked files of
    other snapshots stay: they are other links to the same data)."""
    path = snapshot_dir(root, deployment, snapshot_id)
    shutil.rmtree(path, ignore_errors=True)
    _sidecar(path).unlink(missing_ok=True)


def verify_snapshot(root: Path, deployment: str, snapshot_id: int) -> list[str]:
    """Recompute every collection's count and content hash from the files."""
    path = snapshot_dir(root, deployment, snapshot_id)
    try:
        info = json.loads(_sidecar(path).read_text())
        reader = DumpReader(path)
    except (OSError, ValueError, StorageError) as exc:
        return [f"filesystem snapshot {snapshot_id}: cannot read {path}: {exc}"]
    except Exception as exc:  # noqa: BLE001 - DumpFormatError and friends
        return [f"filesystem snapshot {snapshot_id}: {exc}"]
    problems = []
    found = {ns.namespace: ns for ns in reader}
    for ns_name, rec in info["collections"].items():
        ns = found.get(ns_name)
        if ns is None:
            problems.append(f"filesystem snapshot {snapshot_id}: {ns_name} is missing")
            continue
        if "count" not in rec:
            continue
        try:
            h = ContentHash.of(ns.documents())
        except Exception as exc:  # noqa: BLE001
            problems.append(f"filesystem snapshot {snapshot_id}: {ns_name}: {exc}")
            continue
        if (h.count, h.hexdigest()) != (rec["count"], rec["hash"]):
            problems.append(f"filesystem snapshot {snapshot_id}: {ns_name}: recomputed "
                            f"{h.count}/{h.hexdigest()[:12]} != recorded "
                            f"{rec['count']}/{rec['hash'][:12]}")
    return problems


def read_info(root: Path, deployment: str, snapshot_id: int) -> dict[str, Any]:
    try:
        return json.loads(_sidecar(snapshot_dir(root, deployment, snapshot_id)).read_text())
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"filesystem snapshot {snapshot_id}: {exc}") from None
