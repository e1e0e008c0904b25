"""A malformed or unknown entry stops the batch with an OplogError naming its
ts, op and ns; nothing after it is applied and the head commits everything
before it (its optime is the last good entry's)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import bson
import pytest
from bson.timestamp import Timestamp

from backupflows.errors import OplogError
from backupflows.head.store import HeadStore
from backupflows.oplog.applier import Applier
from backupflows.oplog.update import InvalidUpdate
from tests.oplog.helpers import Op, docs

DIFF = {"$v": 2, "diff": {"u": {"a": 2}}}


def bad_entries(op: Op) -> dict[str, Callable[[], tuple[bytes, str]]]:
    """name -> builder of (raw entry, text the error must contain)."""
    return {
        "unknown op": lambda: (op.entry("z", "d.c", {"_id": 1}), "unknown op 'z'"),
        "no ts": lambda: (bson.encode({"op": "i", "ns": "d.c", "o": {"_id": 1}}), "'ts'"),
        "no o": lambda: (bson.encode({"op": "i", "ns": "d.c", "ts": op.ts()}), "'o'"),
        "no o2": lambda: (op.entry("u", "d.c", DIFF), "o2"),
        "no _id": lambda: (op.i("d.c", {"a": 1}), "_id"),
        "truncated": lambda: (op.i("d.c", {"_id": 1})[:-3], "corrupt BSON"),
        "lying length": lambda: (b"\xff\x00\x00\x00" + op.i("d.c", {"_id": 1})[4:], "corrupt BSON"),
        "unknown command": lambda: (op.c("d", {"frobnicate": "c"}), "unknown command 'frobnicate'"),
        "empty diff": lambda: (op.u("d.c", 1, {"$v": 2, "diff": {}}), "diff"),
        "repeated field": lambda: (op.u("d.c", 1, {"$v": 2, "diff": {"d": {"a": False},
                                                               "u": {"a": 1}}}), "'a'"),
        "bad section order": lambda: (op.u("d.c", 1, {"$v": 2, "diff": {"i": {"x": 1},
                                                                 "u": {"y": 1}}}), "section"),
        "bad array key": lambda: (op.u("d.c", 1, {"$v": 2, "diff": {"sarr": {"a": True, "x3": 1}}}),
                          "x3"),
        "unknown modifier": lambda: (op.u("d.c", 1, {"$inc": {"a": 1}}), "$inc"),
        "applyOps not array": lambda: (op.c("admin", {"applyOps": {"op": "i"}}), "applyOps"),
        "bad inner op": lambda: (op.c("admin", {"applyOps": [{"op": "i", "ns": "d.c",
                                                      "o": {"x": 1}}]}), "_id"),
    }


@pytest.mark.parametrize("name", list(bad_entries(Op())))
@pytest.mark.parametrize("batch_size", [1000, 2])
def test_bad_entry_stops_at_the_last_good_optime(name: str, batch_size: int,
                                                 tmp_path: Path) -> None:
    op = Op(seconds=1_600_000_000)
    good = [op.i("d.c", {"_id": 1, "a": 1}), op.i("d.c", {"_id": 2}),
            op.u("d.c", 1, DIFF)]
    bad, expect = bad_entries(op)[name]()
    after = [op.i("d.c", {"_id": 3}), op.d("d.c", 2)]
    with HeadStore(tmp_path / "h.db") as head:
        with pytest.raises(OplogError) as info:
            Applier(head).apply(good + [bad] + after, batch_size=batch_size)
        msg = str(info.value)
        assert expect in msg
        assert "oplog entry ts=" in msg and "op=" in msg and "ns=" in msg
        if name not in ("no ts", "truncated", "lying length"):
            assert "Timestamp(1600000000, 4)" in msg
        assert head.optime().increment == 3  # the update of _id 1
        assert docs(head, "d", "c") == [{"_id": 1, "a": 2}, {"_id": 2}]
        assert head.integrity_check() == []
        # fixing the input and re-running from the head's position converges
        Applier(head).apply(good[2:] + after)
        assert docs(head, "d", "c") == [{"_id": 1, "a": 2}, {"_id": 3}]


def test_invalid_diff_is_an_invalid_update(tmp_path: Path) -> None:
    op = Op()
    with HeadStore(tmp_path / "h.db") as head:
        with pytest.raises(InvalidUpdate) as info:
            Applier(head).apply([op.i("d.c", {"_id": 1}), op.u("d.c", 1, {"$v": 2, "diff": {}})])
        assert "op='u'" in str(info.value) and "ns='d.c'" in str(info.value)


def test_error_message_names_the_entry() -> None:
    op = Op(seconds=42)
    raw = op.entry("q", "x.y", {})
    with pytest.raises(OplogError, match=r"ts=Timestamp\(42, 1\) op='q' ns='x.y'"):
        from backupflows.oplog.entry import parse
        parse(raw)


def test_non_bson_input_is_rejected(tmp_path: Path) -> None:
    with HeadStore(tmp_path / "h.db") as head, pytest.raises(OplogError, match="raw BSON"):
        Applier(head).apply([{"op": "n"}])  # a dict, not raw BSON


def test_optime_only_moves_forward(tmp_path: Path) -> None:
    with HeadStore(tmp_path / "h.db") as head:
        late = bson.encode({"op": "n", "ns": "", "o": {}, "ts": Timestamp(200, 1), "t": 3})
        early = bson.encode({"op": "n", "ns": "", "o": {}, "ts": Timestamp(100, 1), "t": 2})
        Applier(head).apply([late, early])
        assert (head.optime().seconds, head.optime().t) == (200, 3)
