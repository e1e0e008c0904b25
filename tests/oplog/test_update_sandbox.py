"""Cross-check with the sandbox's update engine, which writes the oplog `o`
a real 7.0 primary writes: a random document and a random update through
``backupflows.sandbox.update.apply_update`` give (new document, oplog o);
applying that o to the raw pre-image with our appliers must give the raw new
document exactly (field order and BSON types included)."""

from __future__ import annotations

import datetime
from typing import Any

import bson
from bson import Int64
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.objectid import ObjectId
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from backupflows.oplog.delta import apply_delta_raw
from backupflows.oplog.deltadict import apply_delta_codec
from backupflows.oplog.update import apply_delta, apply_replacement, apply_update, classify
from backupflows.sandbox.errors import CommandError
from backupflows.sandbox.update import apply_update as sandbox_update

NAMES = st.sampled_from(["a", "b", "c", "x", "0", "1", "10"])
SCALARS = st.one_of(
    st.integers(-3, 3), st.integers(-(2**31), 2**31 - 1), st.integers(-5, 5).map(Int64),
    st.sampled_from([0.5, -1.0, 2.0]), st.text(max_size=4), st.booleans(), st.none(),
    st.binary(max_size=4).map(lambda b: Binary(b, 0)),
    st.binary(min_size=12, max_size=12).map(ObjectId),
    st.integers(0, 2**40).map(
        lambda ms: datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ms)),
    st.integers(-9, 9).map(lambda n: Decimal128(str(n))),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(NAMES, inner, max_size=3)),
    max_leaves=10,
)
DOCS = st.dictionaries(NAMES, VALUES, max_size=5).map(lambda d: {"_id": 1, **d})
PATHS = st.lists(st.sampled_from(["a", "b", "c", "x", "0", "1", "3"]), min_size=1,
                 max_size=3).map(".".join)


def _argument(op: str) -> st.SearchStrategy:
    if op in ("$inc", "$mul"):
        return st.one_of(st.integers(-2, 2), st.sampled_from([0.5, 0.0]),
                         st.integers(-2, 2).map(Int64))
    if op == "$pop":
        return st.sampled_from([1, -1])
    if op == "$push":
        return st.one_of(SCALARS, st.fixed_dictionaries(
            {"$each": st.lists(SCALARS, max_size=3)},
            optional={"$slice": st.integers(-3, 3), "$position": st.integers(-3, 3)}))
    if op == "$addToSet":
        return st.one_of(SCALARS, st.fixed_dictionaries({"$each": st.lists(SCALARS, max_size=3)}))
    if op == "$pull":
        return SCALARS
    if op == "$rename":
        return st.sampled_from(["r", "c", "b.z", "x.y"])
    if op == "$unset":
        return st.just("")
    return VALUES


OPERATORS = ["$set", "$set", "$unset", "$inc", "$mul", "$min", "$max", "$push",
             "$addToSet", "$pop", "$pull", "$rename"]


@st.composite
def operator_updates(draw: Any) -> dict:
    update: dict = {}
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(OPERATORS))
        update.setdefault(op, {})[draw(PATHS)] = draw(_argument(op))
    return update


def enc(doc: dict) -> bytes:
    """Encode in the exact field order (bson.encode moves a top-level _id)."""
    body = b"".join(bson.encode({k: v})[4:-1] for k, v in doc.items())
    return (len(body) + 5).to_bytes(4, "little") + body + b"\x00"


def _check(doc: dict, update: Any, **kwargs: Any) -> None:
    try:
        outcome = sandbox_update(doc, update, **kwargs)
    except CommandError:
        assume(False)
        return
    if outcome.oplog_o is None:
        return
    o = outcome.oplog_o
    expected = enc(outcome.new_doc)
    if classify(o) == "delta":
        assert apply_delta(enc(doc), o["diff"]) == expected, (doc, update, o)
        assert apply_delta(enc(doc), bson.encode(o["diff"])) == expected
        # both paths: the raw walk, and the C-codec path wherever it vouches
        assert apply_delta_raw(enc(doc), o["diff"]) == expected
        assert apply_delta_codec(enc(doc), bson.encode(o["diff"])) in (None, expected)
    else:
        assert apply_replacement(enc(doc), enc(o)) == expected, (doc, update, o)
    assert apply_update(enc(doc), o) == expected


SETTINGS = settings(max_examples=250, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@SETTINGS
@given(DOCS, operator_updates())
def test_operator_updates_replay_through_apply_delta(doc: dict, update: dict) -> None:
    _check(doc, update)


@SETTINGS
@given(DOCS, st.lists(st.dictionaries(NAMES, VALUES, max_size=2), max_size=4), VALUES)
def test_positional_updates_replay_through_apply_delta(doc: dict, items: list,
                                                        value: Any) -> None:
    doc["arr"] = items
    _check(doc, {"$set": {"arr.$[].x": value}})
    _check(doc, {"$set": {"arr.$[e].y": value}}, array_filters=[{"e.x": {"$exists": True}}])


@SETTINGS
@given(DOCS, st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=2),
       st.sampled_from(["$a", "$b", "$c.0"]), VALUES)
def test_pipeline_and_replacement_updates_replay(doc: dict, unset: list, source: str,
                                                 value: Any) -> None:
    _check(doc, [{"$set": {"n": source, "b.q": 1}}, {"$unset": unset}])
    _check(doc, {"a": value, "z": 1})


@SETTINGS
@given(DOCS, st.lists(VALUES, min_size=1, max_size=6), st.integers(0, 7),
       st.lists(VALUES, max_size=3), st.data())
def test_pipeline_array_rewrites_replay(doc: dict, old: list, keep: int, extra: list,
                                        data: st.DataObject) -> None:
    """Pipeline diffs of a big document with a long array: in place updates,
    truncation and growth (``l``), nested sub-diffs."""
    doc["big"] = "x" * 200
    doc["arr"] = old
    new = list(old[:keep]) + extra
    for i in data.draw(st.sets(st.integers(0, max(len(new) - 1, 0)), max_size=2)):
        if i < len(new):
            new[i] = data.draw(VALUES)
    _check(doc, [{"$set": {"arr": {"$literal": new}}}])
