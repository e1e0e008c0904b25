"""Entry parsing by learned layouts gives exactly what the field walk gives:
random entries (field order, types, optional fields, corruption) parsed with
layouts being learned all along compare equal, attribute by attribute and
error by error, with a walk-only parse."""

from __future__ import annotations

import datetime
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bson
from bson import Int64
from bson.binary import Binary
from bson.objectid import ObjectId
from bson.son import SON
from bson.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupflows.errors import OplogError
from backupflows.oplog import crud, entry
from backupflows.oplog.entry import Entry, parse

_ATTRS = ("op", "ns", "ui", "ts", "t", "o_span", "o2_span", "lsid", "txn_number",
          "from_migrate", "upsert", "multi_op_type", "has_prev", "db", "coll")


def walked(raw: bytes) -> Entry | str:
    """The walk-only parse (no layouts), or its error message."""
    saved = entry._layouts
    entry._layouts = entry._Layouts()
    entry._layouts.match = lambda raw, n: None  # type: ignore[method-assign]
    try:
        return parse(raw)
    except OplogError as exc:
        return str(exc)
    finally:
        entry._layouts = saved


def parsed(raw: bytes) -> Entry | str:
    try:
        return parse(raw)
    except OplogError as exc:
        return str(exc)


def same(a: Entry | str, b: Entry | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return all(getattr(a, k) == getattr(b, k) for k in _ATTRS) and key_of(a) == key_of(b)


def key_of(e: Entry) -> bytes | str | None:
    """The ``_id`` key the applier takes (a layout may have set it already)."""
    if e.op not in ("i", "u", "d"):
        return None
    try:
        return crud.entry_key(e)
    except OplogError as exc:
        return str(exc)


UI = Binary(b"\x07" * 16, 4)
OID = ObjectId(b"\x5f" * 12)
GOOD: dict[str, Any] = {
    "op": st.sampled_from(["i", "u", "d"]),
    "ns": st.sampled_from(["db.c", "db.d"]),
    "ui": st.just(UI),
    "o": st.sampled_from([{"_id": 1, "a": "x"}, {"_id": 2}, {"_id": OID, "a": "x"},
                          SON([("a", 1), ("_id", OID)]), {"_id": OID}]),
    "o2": st.sampled_from([{"_id": 1}, {"_id": 3}, {"_id": OID}, {"_id": OID, "sk": 1},
                           SON([("sk", 1), ("_id", OID)])]),
    "ts": st.integers(1, 9).map(lambda i: Timestamp(100, i)),
    "t": st.sampled_from([Int64(1), Int64(2)]),
    "v": st.just(2),
    "wall": st.just(datetime.datetime(2024, 1, 1)),
}
ODD: dict[str, Any] = {  # other types, and the fields fewer entries have
    "op": st.sampled_from(["n", "c", "x", 5]),
    "ns": st.sampled_from(["nodot", 7]),
    "ui": st.sampled_from([Binary(b"\x01" * 15, 4), "not binary"]),
    "o": st.sampled_from([{}, "not a doc"]),
    "o2": st.just(1),
    "ts": st.just(Int64(5)),
    "t": st.sampled_from([3, 4.0, "x"]),
    "v": st.just(Int64(2)),
    "h": st.just(Int64(99)),
    "stmtId": st.sampled_from([0, 1]),
    "lsid": st.just({"id": Binary(b"\x02" * 16, 4)}),
    "txnNumber": st.sampled_from([Int64(1), 2]),
    "fromMigrate": st.booleans(),
    "b": st.booleans(),
    "prevOpTime": st.just({"ts": Timestamp(1, 1), "t": Int64(1)}),
    "multiOpType": st.just(1),
}
USUAL = ["op", "ns", "ui", "o", "o2", "ts", "t", "v", "wall"]


@st.composite
def entries(draw: st.DrawFn) -> bytes:
    """Mostly the usual layout with usual values; sometimes a field of
    another type, a field dropped, added or moved, or corrupt bytes."""
    names = list(USUAL)
    odd = set()
    for _ in range(draw(st.integers(0, 2))):
        change = draw(st.integers(0, 3))
        if change == 0 and names:
            names.remove(draw(st.sampled_from(names)))
        elif change == 1:
            names.insert(draw(st.integers(0, len(names))), draw(st.sampled_from(sorted(ODD))))
        elif change == 2 and len(names) > 1:
            names.insert(draw(st.integers(0, len(names) - 1)), names.pop())
        else:
            odd.add(draw(st.sampled_from(names or ["op"])))
    doc = SON()
    for n in names:
        doc[n] = draw(ODD[n] if (n in odd or n not in GOOD) and n in ODD else GOOD[n])
    raw = bson.encode(doc)
    cut = draw(st.integers(0, 20))
    if cut == 0:  # corrupt: truncated, with a consistent length prefix
        raw = raw[:-9] + b"\x00"
        raw = struct.pack("<i", len(raw)) + raw[4:]
    elif cut == 1:  # corrupt: a lying length inside o
        at = raw.find(b"\x03o\x00")
        if at > 0:
            raw = raw[:at + 3] + struct.pack("<i", 1000) + raw[at + 7:]
    return raw


@contextmanager
def fresh_layouts(retry: int = 1) -> Iterator[entry._Layouts]:
    """A clean slate of layouts, learning from every ``retry``-th walk."""
    saved = entry._layouts
    entry._layouts = layouts = entry._Layouts()
    layouts.RETRY = retry
    try:
        yield layouts
    finally:
        entry._layouts = saved


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entries(), min_size=1, max_size=30))
def test_layouts_give_what_the_walk_gives(raws: list[bytes]) -> None:
    with fresh_layouts():
        for raw in raws * 2:  # the second round meets the layouts the first one taught
            assert same(parsed(raw), walked(raw)), raw


def test_the_usual_entries_are_read_by_their_layout() -> None:
    def usual(i: int, op: str = "i") -> bytes:
        doc = SON([("op", op), ("ns", "db.c"), ("ui", UI), ("o", {"_id": i})])
        if op == "u":
            doc["o2"] = {"_id": i}
        doc.update(ts=Timestamp(100, i), t=Int64(1), v=2, wall=datetime.datetime(2024, 1, 1))
        return bson.encode(doc)

    with fresh_layouts(retry=32) as layouts:
        for i in range(3):
            for op in ("i", "u"):
                parse(usual(i, op))
        assert len(layouts.known) == 2
        assert layouts.match(usual(7, "u"), len(usual(7, "u"))) is not None
        assert same(parse(usual(7, "u")), walked(usual(7, "u")))
        assert parse(usual(7, "u")).ts == (100 << 32) | 7
        assert layouts.walks == 0  # nothing walked since the last layout was learned
