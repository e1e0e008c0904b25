"""Shared helpers of the head and applier tests: reading fixtures, comparing
whole heads, building raw oplog entries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bson
from bson import json_util
from bson.binary import Binary
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from backupflows.head.store import HeadStore
from tests.fixture_paths import MONGO_TOOLS as FIXTURES  # noqa: E402

TESTDATA = FIXTURES / "mongorestore" / "testdata"
TXN_CASES = FIXTURES / "common" / "txn" / "testdata" / "oplog_entries.json"
RAW = CodecOptions(document_class=RawBSONDocument)


def file_entries(path: Path | str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        for doc in bson.decode_file_iter(f, RAW):
            yield doc.raw


def ejson_entry(doc: dict[str, Any] | str) -> bytes:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return bson.encode(json_util.loads(text))


def txn_cases() -> dict[str, dict[str, Any]]:
    return json.loads(TXN_CASES.read_text())


def head_state(head: HeadStore) -> dict[str, Any]:
    """Everything a head holds, for equality checks (documents raw, in order)."""
    state: dict[str, Any] = {"optime": head.optime()}
    for c in head.collections():
        state[c.ns] = {
            "type": c.type, "uuid": c.uuid, "options": c.options,
            "indexes": head.indexes(c), "builds": head.index_builds(c),
            "docs": list(head.export(c)), "hash": (c.count, c.hash),
            "missing": list(head.missing(c)),
        }
    state["txn"] = head.conn.execute(
        "SELECT txn, ts, entry FROM txn_entries ORDER BY txn, ts").fetchall()
    return state


def data_state(head: HeadStore) -> dict[str, Any]:
    """Like ``head_state`` without the optime."""
    state = head_state(head)
    del state["optime"]
    return state


def docs(head: HeadStore, db: str, name: str) -> list[dict[str, Any]]:
    c = head.collection(db, name)
    return [] if c is None else [bson.decode(d) for d in head.export(c)]


def index_specs(head: HeadStore, db: str, name: str) -> list[dict[str, Any]]:
    c = head.require(db, name)
    return [bson.decode(s) for s in head.indexes(c)]


def uuid(n: int) -> Binary:
    return Binary(n.to_bytes(16, "big"), 4)


class Op:
    """Builds raw oplog entries with increasing timestamps."""

    def __init__(self, seconds: int = 1_700_000_000) -> None:
        self.seconds, self.inc = seconds, 0

    def ts(self) -> Timestamp:
        self.inc += 1
        return Timestamp(self.seconds, self.inc)

    def entry(self, op: str, ns: str, o: Any, *, ui: Binary | None = None,
              o2: Any = None, **extra: Any) -> bytes:
        doc: dict[str, Any] = {"op": op, "ns": ns}
        if ui is not None:
            doc["ui"] = ui
        doc["o"] = o
        if o2 is not None:
            doc["o2"] = o2
        doc.update(ts=self.ts(), t=Int64(1), v=2)
        doc.update(extra)
        return bson.encode(doc)

    def i(self, ns: str, doc: Any, ui: Binary | None = None, **kw: Any) -> bytes:
        return self.entry("i", ns, doc, ui=ui, **kw)

    def u(self, ns: str, _id: Any, o: Any, ui: Binary | None = None, **kw: Any) -> bytes:
        return self.entry("u", ns, o, ui=ui, o2={"_id": _id}, **kw)

    def d(self, ns: str, _id: Any, ui: Binary | None = None, **kw: Any) -> bytes:
        return self.entry("d", ns, {"_id": _id}, ui=ui, **kw)

    def c(self, db: str, o: Any, ui: Binary | None = None, **kw: Any) -> bytes:
        return self.entry("c", f"{db}.$cmd", o, ui=ui, **kw)

    def n(self) -> bytes:
        return self.entry("n", "", {"msg": "periodic noop"})
