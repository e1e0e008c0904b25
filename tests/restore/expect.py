"""Comparing a restore's output with the recorded source state, read back by
code that does not use backupflows' own readers: .bson files split by their
length prefixes, metadata parsed as Extended JSON, archives by
``archive_spec``, target databases through pymongo."""

from __future__ import annotations

import gzip
import struct
import urllib.parse
from pathlib import Path
from typing import Any

from bson import json_util
from bson.json_util import JSONOptions

from tests.restore.archive_spec import Archive
from tests.restore.world import NsState

_JSON = JSONOptions(tz_aware=False)
BUCKETS = "system.buckets."


def split_bson(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n = struct.unpack_from("<i", data, pos)[0]
        assert n >= 5 and data[pos + n - 1] == 0, f"bad document at {pos}"
        out.append(data[pos:pos + n])
        pos += n
    return out


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def expected_view(state: dict[str, NsState], renames: dict[str, str] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """The state as a dump shows it: per delivered namespace, its type,
    documents (a time series: its buckets'), index specs and options."""
    renames = renames or {}
    ts = {ns for ns, st in state.items() if st.type == "timeseries"}
    out: dict[str, dict[str, Any]] = {}
    for ns, st in state.items():
        db, _, name = ns.partition(".")
        if name.startswith(BUCKETS) and f"{db}.{name[len(BUCKETS):]}" in ts:
            continue
        target = renames.get(ns, ns)
        if st.type == "timeseries":
            buckets = state.get(f"{db}.{BUCKETS}{name}")
            out[target] = {"type": st.type, "docs": buckets.docs if buckets else [],
                           "indexes": st.indexes}
        else:
            out[target] = {"type": st.type, "docs": st.docs,
                           "indexes": st.indexes if st.type == "collection" else [],
                           "options": st.options}
    return out


def read_dump_dir(root: Path) -> dict[str, dict[str, Any]]:
    """A mongodump directory as ``expected_view`` shapes it."""
    out: dict[str, dict[str, Any]] = {}
    for db_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for meta_path in sorted(db_dir.glob("*.metadata.json*")):
            meta = json_util.loads(_read(meta_path), json_options=_JSON)
            name = meta["collectionName"]
            data_name = BUCKETS + name if meta["type"] == "timeseries" else name
            ext = ".bson.gz" if meta_path.name.endswith(".gz") else ".bson"
            bson_path = db_dir / (urllib.parse.quote(data_name, safe="$&+:=@") + ext)
            docs = split_bson(_read(bson_path)) if bson_path.exists() else []
            entry: dict[str, Any] = {"type": meta["type"], "docs": docs,
                                     "indexes": meta["indexes"]}
            if meta["type"] != "timeseries":
                entry["options"] = meta.get("options", {})
            out[f"{db_dir.name}.{name}"] = entry
    return out


def archive_view(a: Archive) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in a.prelude:
        meta = json_util.loads(p["metadata"], json_options=_JSON)
        name = p["collection"]
        data = BUCKETS + name if p["type"] == "timeseries" else name
        entry: dict[str, Any] = {"type": p["type"],
                                 "docs": a.documents.get(f"{p['db']}.{data}", []),
                                 "indexes": meta["indexes"]}
        if p["type"] != "timeseries":
            entry["options"] = meta.get("options", {})
        out[f"{p['db']}.{name}"] = entry
        assert f"{p['db']}.{data}" in a.eof, f"no EOF for {p['db']}.{data}"
    return out


def assert_same(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    """Namespace by namespace, document by document (raw bytes), index by index
    (field order included)."""
    assert sorted(got) == sorted(want)
    for ns in want:
        g, w = got[ns], want[ns]
        assert g["type"] == w["type"], ns
        assert len(g["docs"]) == len(w["docs"]), ns
        assert g["docs"] == w["docs"], f"{ns}: documents differ"
        assert [list(i.items()) for i in g["indexes"]] == \
            [list(i.items()) for i in w["indexes"]], f"{ns}: indexes differ"
        if "options" in w:
            assert list(g["options"].items()) == list(w["options"].items()), ns
