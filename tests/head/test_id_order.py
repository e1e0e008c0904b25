"""The head exports a collection in the server's ``_id`` order, across every
BSON type, with numeric equality (1, 1L, 1.0 are one document)."""

from __future__ import annotations

import datetime
import random
from pathlib import Path

import bson
from bson.binary import Binary
from bson.code import Code
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from backupflows.head.store import HeadStore
from backupflows.oplog.applier import Applier
from tests.oplog.helpers import Op

# In server order (reference "_id order"); arrays are not allowed as _id.
ORDERED = [
    MinKey(),
    None,
    float("nan"),
    float("-inf"),
    Int64(-(2 ** 62)),
    -1.5,
    -1,
    Decimal128("-0.5"),
    0,
    Decimal128("0.25"),
    0.5,
    1,
    Int64(2),
    2.5,
    Decimal128("3"),
    2 ** 40,
    float("inf"),
    "",
    "A",
    "a",
    "a\x00b",
    "ab",
    "b",
    "é",
    {},
    {"a": 1},
    {"a": 1, "b": 1},
    {"a": 2},
    {"b": 0},  # elements compare by type first: a number before a string
    {"a": "x"},
    Binary(b"\xff", 0),
    Binary(b"\x00\x00", 0),
    Binary(b"\x00\x00", 4),
    ObjectId("000000000000000000000000"),
    ObjectId("5a1101e6a8feb0cc944981c0"),
    ObjectId("ffffffffffffffffffffffff"),
    False,
    True,
    datetime.datetime(1960, 1, 1),
    datetime.datetime(1970, 1, 1),
    datetime.datetime(2024, 5, 1),
    Timestamp(1, 1),
    Timestamp(1, 2),
    Timestamp(2 ** 32 - 1, 0),
    Regex("a", "i"),
    Regex("b", ""),
    Code("x"),
    MaxKey(),
]


def test_export_in_server_id_order_across_types(tmp_path: Path) -> None:
    docs = [bson.encode({"_id": v, "n": i}) for i, v in enumerate(ORDERED)]
    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    with HeadStore(tmp_path / "h.db") as head:
        head.ensure_collection("d", "c")
        head.load_slice("d", "c", shuffled)
        got = [bson.decode(d)["n"] for d in head.export(head.require("d", "c"))]
    assert got == list(range(len(ORDERED)))


def test_numeric_equality_makes_one_document(tmp_path: Path) -> None:
    op = Op()
    entries = [op.i("d.c", {"_id": 1, "v": "int"}), op.i("d.c", {"_id": Int64(1), "v": "long"}),
               op.i("d.c", {"_id": 1.0, "v": "double"}),
               op.i("d.c", {"_id": Decimal128("1.00"), "v": "decimal"}),
               op.u("d.c", 1.0, {"$v": 2, "diff": {"u": {"v": "updated"}}}),
               op.i("d.c", {"_id": {"k": 1}, "v": "sub"}),
               op.u("d.c", {"k": Int64(1)}, {"$set": {"v": "sub updated"}}),
               op.i("d.c", {"_id": -0.0, "v": "zero"}), op.d("d.c", 0)]
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply(entries)
        got = [bson.decode(d) for d in head.export(head.require("d", "c"))]
        assert got == [{"_id": Decimal128("1.00"), "v": "updated"},
                       {"_id": {"k": 1}, "v": "sub updated"}]
        assert head.require("d", "c").count == 2


def test_nested_documents_compare_field_by_field(tmp_path: Path) -> None:
    # element by element: canonical type, then field name, then value
    ids = [{"b": MinKey()}, {"b": None}, {"a": 1, "c": 0}, {"a": 1, "b": {"c": 1}},
           {"a": 1, "b": {"c": 2}}, {"a": 1.5}]
    with HeadStore(tmp_path / "h.db") as head:
        head.ensure_collection("d", "c")
        head.load_slice("d", "c", [bson.encode({"_id": i}) for i in reversed(ids)])
        got = [bson.decode(d)["_id"] for d in head.export(head.require("d", "c"))]
    assert got == ids
