"""The _id key encoding sorts exactly as the server sorts values."""

from __future__ import annotations

import decimal
import random
import uuid
from datetime import datetime

import bson
import pytest
from bson import (
    Binary,
    Code,
    Decimal128,
    Int64,
    MaxKey,
    MinKey,
    ObjectId,
    Regex,
    Timestamp,
)
from bson.son import SON
from hypothesis import given, settings
from hypothesis import strategies as st

from backupflows.bsonorder import KeyError_, id_key, raw_id, value_key

# One value per rung of the server's type ladder, in server order.
LADDER = [
    MinKey(),
    None,
    float("nan"),
    float("-inf"),
    -1e300,
    Int64(-5),
    -1.5,
    -1e-300,
    0,
    1e-300,
    0.1,
    1,
    1.5,
    Int64(2**62),
    float(2**70),
    Decimal128("1E+100"),
    float("inf"),
    "",
    "a",
    "a\x00",
    "ab",
    "b",
    "\u00e9",
    {},
    {"a": MinKey()},
    {"a": 1},
    {"a": 1, "b": 1},
    {"a": 2},
    {"b": 0},
    {"a": "x"},
    [],
    [1],
    [1, 2],
    [2],
    Binary(b"z", 0),
    Binary(b"ab", 0),
    Binary(b"ab", 4),
    Binary(b"ac", 4),
    ObjectId("000000000000000000000000"),
    ObjectId("ffffffffffffffffffffffff"),
    False,
    True,
    datetime(1960, 1, 1),
    datetime(2020, 1, 1),
    Timestamp(1, 1),
    Timestamp(1, 2),
    Timestamp(2**31 + 5, 0),
    Regex("a", "i"),
    Regex("b", ""),
    Code("x"),
    Code("x", {"a": 1}),
    MaxKey(),
]


def test_type_ladder_is_strictly_ordered() -> None:
    keys = [value_key(v) for v in LADDER]
    for (a, ka), (b, kb) in zip(zip(LADDER, keys), zip(LADDER[1:], keys[1:])):
        assert ka < kb, f"{a!r} should sort before {b!r}"


@pytest.mark.parametrize(
    "same",
    [
        [1, Int64(1), 1.0, Decimal128("1.00"), Decimal128("1")],
        [0, -0.0, 0.0, Int64(0), Decimal128("-0"), Decimal128("0E+10")],
        [float("nan"), Decimal128("NaN")],
        [2**53, float(2**53), Decimal128("9007199254740992")],
        [{"a": 1}, {"a": 1.0}, {"a": Int64(1)}],
        [[1, {"x": 2}], [1.0, {"x": Int64(2)}]],
        ["s", bson.code.Code("s").__str__()],
    ],
)
def test_numeric_equality(same: list) -> None:
    assert len({value_key(v) for v in same}) == 1


def test_close_numbers_differ() -> None:
    # double 0.1 is 0.1000000000000000055511151231257827...
    assert value_key(0.1) > value_key(Decimal128("0.1"))
    assert value_key(2**53 + 1) > value_key(float(2**53))
    assert value_key(Int64(2**63 - 1)) < value_key(float(2**63))
    assert value_key(-(2**63)) == value_key(float(-(2**63)))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.decimals(allow_nan=False, places=None).filter(
        lambda d: d.is_finite() and abs(d.adjusted()) < 6000),
), min_size=2, max_size=30))
def test_numbers_sort_by_value(xs: list) -> None:
    def as_bson(v):
        if isinstance(v, decimal.Decimal):
            return Decimal128(decimal.Context(prec=34).create_decimal(v))
        if isinstance(v, int) and not -(2**31) <= v < 2**31:
            return Int64(v)
        return v

    vals = [as_bson(v) for v in xs]

    def exact(v):
        return v.to_decimal() if isinstance(v, Decimal128) else decimal.Decimal(v)

    for a in vals:
        for b in vals:
            ea, eb = exact(a), exact(b)
            ka, kb = value_key(a), value_key(b)
            assert (ka < kb) == (ea < eb) and (ka == kb) == (ea == eb), (a, b)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=6), min_size=2, max_size=20))
def test_strings_sort_bytewise(xs: list[str]) -> None:
    assert sorted(xs, key=value_key) == sorted(xs, key=lambda s: s.encode())


def test_objects_compare_type_then_name_then_value() -> None:
    # field names decide before values of the same type
    assert value_key(SON([("a", 9)])) < value_key(SON([("b", 0)]))
    # the canonical type decides before the field name
    assert value_key(SON([("z", 1)])) < value_key(SON([("a", "x")]))
    # a prefix object sorts first
    assert value_key({"a": 1}) < value_key({"a": 1, "b": MinKey()})


def test_id_key_reads_raw_documents() -> None:
    oid = ObjectId()
    assert id_key(bson.encode({"_id": oid, "x": 1})) == value_key(oid)
    assert id_key(bson.encode({"x": [1, 2], "_id": 3})) == value_key(3)
    u = uuid.uuid4()
    raw = bson.encode({"_id": Binary.from_uuid(u)})
    assert id_key(raw) == value_key(Binary.from_uuid(u))
    assert bson.decode(raw_id(bson.encode({"a": 1, "_id": "k"}))) == {"_id": "k"}


def test_id_key_errors_are_clear() -> None:
    with pytest.raises(KeyError_, match="no _id"):
        id_key(bson.encode({"a": 1}))
    with pytest.raises(KeyError_):
        id_key(bson.encode({"_id": "abc"})[:-4])


def test_random_mixed_ids_sort_like_a_reference_comparator() -> None:
    """Ints, strings and ObjectIds mixed: the key order is the server order."""
    rng = random.Random(7)
    ids = [rng.choice([rng.randint(-1000, 1000), str(rng.random()), ObjectId(),
                       float(rng.randint(-5, 5)) + 0.5]) for _ in range(500)]

    def reference(v):
        rank = 0 if isinstance(v, int | float) else 1 if isinstance(v, str) else 2
        return (rank, v if rank != 2 else v.binary) if rank else (0, v)

    assert sorted(ids, key=value_key) == sorted(ids, key=reference)


def test_uuid_values_are_standard_binary() -> None:
    u = uuid.uuid4()
    assert value_key(u) == value_key(Binary.from_uuid(u))
