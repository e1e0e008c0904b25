"""The deployment's namespace filter applied to raw oplog entries.

The oplog store keeps every entry of user namespaces (ingestion drops only
internal ones); the head holds only the namespaces the filter copies, so
entries are filtered right before they are applied:

- CRUD (``i``/``u``/``d``): kept when ``filter.matches_ns(ns)``;
- commands naming a collection (``create``, ``drop``, ``collMod``, index
  builds, ...): kept when that collection matches;
- ``dropDatabase``, ``commitTransaction``/``abortTransaction``, noops: kept
  (they only touch what the head holds);
- ``renameCollection``: kept when the source matches; a rename from a copied
  collection to one the filter excludes becomes a ``drop`` of the source (it
  left the backup); a rename into the copied set from outside is kept (the
  target then exists, empty of the documents it had before: validation's
  compare refetches them);
- ``applyOps``: the inner operations are filtered; an entry keeping all of
  them is passed as is, one keeping none is dropped unless it belongs to a
  transaction (then its empty form is kept so the chain stays whole), a
  mixed one is rewritten with the kept operations only (decoded, the rare
  case).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion

from backupflows.oplog.entry import Entry, parse
from backupflows.source.namespaces import NamespaceFilter

_LOSSLESS = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS)
_COLLECTION_COMMANDS = frozenset((
    "create", "drop", "collMod", "createIndexes", "dropIndexes", "deleteIndexes", "dropIndex",
    "startIndexBuild", "commitIndexBuild", "abortIndexBuild", "convertToCapped", "emptycapped",
    "importCollection"))


def filter_entries(entries: Iterable[bytes], filt: NamespaceFilter) -> Iterator[bytes]:
    """The entries (raw BSON) the filter lets through, rewritten where needed."""
    if filt.is_everything:
        yield from entries
        return
    for raw in entries:
        kept = filter_entry(raw, filt)
        if kept is not None:
            yield kept


def filter_entry(raw: bytes, filt: NamespaceFilter) -> bytes | None:
    """``raw``, a rewritten form of it, or None when nothing of it is copied."""
    e = parse(raw)
    if e.op in ("i", "u", "d"):
        return raw if filt.matches_ns(e.ns or "") else None
    if e.op != "c":
        return raw
    o = e.o()
    name, value = _first_field(o)
    if name in _COLLECTION_COMMANDS:
        return raw if isinstance(value, str) and filt.matches_ns(f"{e.db}.{value}") else None
    if name == "renameCollection":
        return _rename(e, filt)
    if name == "applyOps":
        return _apply_ops(e, filt)
    return raw


def _first_field(o: bytes) -> tuple[str, Any]:
    doc = bson.decode(o, _LOSSLESS) if len(o) < 4096 else _first_only(o)
    for key, value in doc.items():
        return key, value
    return "", None


def _first_only(o: bytes) -> dict[str, Any]:
    """The first field of a large command document (createIndexes with many
    specs, applyOps) without decoding the rest."""
    from bson.raw_bson import RawBSONDocument

    doc = RawBSONDocument(o)
    for key in doc:
        value = doc[key]
        return {key: value if isinstance(value, str | int | float) else None}
    return {}


def _rename(e: Entry, filt: NamespaceFilter) -> bytes | None:
    o = bson.decode(e.o(), _LOSSLESS)
    src, dst = str(o.get("renameCollection", "")), str(o.get("to", ""))
    if not filt.matches_ns(src):
        return e.raw if filt.matches_ns(dst) else None
    if filt.matches_ns(dst):
        return e.raw
    db, _, coll = src.partition(".")
    entry = bson.decode(e.raw, _LOSSLESS)
    entry["ns"] = f"{db}.$cmd"
    entry["o"] = {"drop": coll}
    entry.pop("o2", None)
    return bson.encode(entry, codec_options=_LOSSLESS)


def _apply_ops(e: Entry, filt: NamespaceFilter) -> bytes | None:
    entry = bson.decode(e.raw, _LOSSLESS)
    ops = entry["o"].get("applyOps") or []
    kept = [op for op in ops if _inner_kept(op, filt)]
    if len(kept) == len(ops):
        return e.raw
    if not kept and e.lsid is None:
        return None
    entry["o"]["applyOps"] = kept
    return bson.encode(entry, codec_options=_LOSSLESS)


def _inner_kept(op: dict[str, Any], filt: NamespaceFilter) -> bool:
    raw = bson.encode(op, codec_options=_LOSSLESS)
    if "ts" not in op:
        # inner ops borrow the outer position; give parse() one to check
        raw = bson.encode({**op, "ts": bson.Timestamp(0, 0)}, codec_options=_LOSSLESS)
    return filter_entry(raw, filt) is not None
