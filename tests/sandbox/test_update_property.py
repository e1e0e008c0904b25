"""Property test of the update engine's $v:2 diffs.

Random documents get random operator (and pipeline) updates.  Every produced
oplog `o` must be a well-formed diff, and applying it to the pre-image with the
small reference applier below (written from /work/shared/reference/oplog.md,
independently of the engine) must give exactly the engine's new document,
field order and BSON types included.  An update without an oplog entry must
not have changed the document.
"""

from __future__ import annotations

from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupflows.sandbox.errors import CommandError
from backupflows.sandbox.update import apply_update

# ----------------------------------------------------------------- reference applier


def _is_array_diff(diff: dict) -> bool:
    return next(iter(diff), None) == "a"


def apply_doc_diff(doc: dict, diff: dict) -> dict:
    """oplog.md "Applying a document diff to a document"."""
    deletes, updates, inserts = diff.get("d", {}), diff.get("u", {}), diff.get("i", {})
    subs = {k[1:]: v for k, v in diff.items() if k.startswith("s")}
    out: dict = {}
    for name, value in doc.items():
        if name in deletes or name in inserts:
            continue
        if name in updates:
            out[name] = updates[name]
        elif name in subs:
            out[name] = _apply_sub(value, subs[name])
        else:
            out[name] = value
    for name, value in updates.items():
        if name not in out:
            out[name] = value
    for name, value in inserts.items():
        out[name] = value
    return out


def _apply_sub(value: Any, sub: dict) -> Any:
    if _is_array_diff(sub):
        return apply_array_diff(value, sub) if isinstance(value, list) else None
    return apply_doc_diff(value, sub) if isinstance(value, dict) else None


def apply_array_diff(array: list, diff: dict) -> list:
    """oplog.md: the array diff walk, then appends up to the new length."""
    length = diff.get("l")
    mods = {int(k[1:]): (k[0], v) for k, v in diff.items() if k not in ("a", "l")}
    out = []
    for idx, elem in enumerate(array):
        if length is not None and idx >= length:
            break
        kind, value = mods.get(idx, (None, None))
        if kind == "u":
            out.append(value)
        elif kind == "s":
            out.append(_apply_sub(elem, value))
        else:
            out.append(elem)
    idx = len(out)
    while (length is not None and idx < length) or any(k >= idx for k in mods):
        kind, value = mods.get(idx, (None, None))
        out.append(value if kind == "u" else None)
        idx += 1
    return out


def check_well_formed(diff: dict) -> None:
    assert diff, "empty diff"
    keys = list(diff)
    ranks = [{"d": 0, "u": 1, "i": 2}.get(k, 3) for k in keys]
    assert all(k in ("d", "u", "i") or k.startswith("s") for k in keys), keys
    assert ranks == sorted(ranks), f"sections out of order: {keys}"
    seen: set[str] = set()
    for key in keys:
        names = list(diff[key]) if key in ("d", "u", "i") else [key[1:]]
        for name in names:
            assert name not in seen, f"field {name!r} in two sections"
            seen.add(name)
        if key in ("d", "u", "i"):
            assert diff[key], f"empty section {key}"
        if key == "d":
            assert all(v is False for v in diff[key].values())
        if key.startswith("s"):
            sub = diff[key]
            if _is_array_diff(sub):
                _check_array(sub)
            else:
                check_well_formed(sub)


def _check_array(diff: dict) -> None:
    keys = list(diff)
    assert keys[0] == "a" and diff["a"] is True
    rest = keys[1:]
    if rest and rest[0] == "l":
        rest = rest[1:]
    indexes = [int(k[1:]) for k in rest]
    assert indexes == sorted(set(indexes)), f"array indexes not ascending: {keys}"
    assert rest or "l" in diff, "array diff changes nothing"
    for key in rest:
        assert key[0] in "us"
        if key[0] == "s":
            sub = diff[key]
            (_check_array if _is_array_diff(sub) else check_well_formed)(sub)


def test_reference_applier_on_documented_examples() -> None:
    # The examples of the issue and oplog.md, to show the applier itself is right.
    assert apply_doc_diff({"_id": 1, "a": 2}, {"u": {"a": 3}}) == {"_id": 1, "a": 3}
    assert apply_doc_diff({"_id": 1, "a": [2]}, {"sa": {"a": True, "u0": 3}}) == \
        {"_id": 1, "a": [3]}
    moved = apply_doc_diff({"a": 1, "b": 2}, {"i": {"a": 5}})
    assert list(moved.items()) == [("b", 2), ("a", 5)]
    assert apply_array_diff([1, 2, 3], {"a": True, "l": 1}) == [1]
    assert apply_array_diff([1], {"a": True, "u3": 9}) == [1, None, None, 9]
    assert apply_doc_diff({"x": 1}, {"sy": {"u": {"z": 1}}}) == {"x": 1}


# ----------------------------------------------------------------- strategies

NAMES = st.sampled_from(["a", "b", "c", "x", "0", "1"])
SCALARS = st.one_of(
    st.integers(-3, 3), st.sampled_from([2 ** 31 - 1, 2 ** 40, 1.5, -0.0, 0.0]),
    st.text("ab", max_size=2), st.none(), st.booleans(),
    st.integers(-5, 5).map(bson.int64.Int64),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(NAMES, inner, max_size=3)),
    max_leaves=8,
)
SHAPED = st.fixed_dictionaries({
    "_id": st.just(1),
    "a": st.lists(st.one_of(SCALARS, st.dictionaries(NAMES, VALUES, max_size=3)), max_size=4),
    "b": st.dictionaries(NAMES, VALUES, max_size=3),
})
DOCS = st.one_of(st.dictionaries(NAMES, VALUES, max_size=4).map(lambda d: {"_id": 1, **d}),
                 SHAPED)
PATHS = st.lists(st.sampled_from(["a", "b", "c", "0", "1", "2", "x"]), min_size=1,
                 max_size=3).map(".".join)


def _spec(op: str) -> st.SearchStrategy:
    if op in ("$inc", "$mul"):
        return st.one_of(st.integers(-2, 2), st.sampled_from([0.5, 0.0]),
                         st.integers(-2, 2).map(bson.int64.Int64))
    if op == "$pop":
        return st.sampled_from([1, -1])
    if op == "$push":
        return st.one_of(SCALARS, st.fixed_dictionaries(
            {"$each": st.lists(SCALARS, max_size=3)},
            optional={"$slice": st.integers(-3, 3), "$position": st.integers(-3, 3),
                      "$sort": st.sampled_from([1, -1])}))
    if op == "$addToSet":
        return st.one_of(SCALARS, st.fixed_dictionaries({"$each": st.lists(SCALARS,
                                                                          max_size=3)}))
    if op == "$pullAll":
        return st.lists(SCALARS, max_size=3)
    if op == "$rename":
        return st.sampled_from(["r", "c", "b.z", "x.y"])
    if op == "$unset":
        return st.just("")
    return VALUES


OPS = ["$set", "$unset", "$inc", "$mul", "$min", "$max", "$push", "$addToSet", "$pop",
       "$pull", "$pullAll", "$rename"]


@st.composite
def updates(draw: Any) -> dict:
    update: dict = {}
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(OPS))
        fields = update.setdefault(op, {})
        fields[draw(PATHS)] = draw(_spec(op))
    return update


def _check(doc: dict, update: Any, **kwargs: Any) -> None:
    try:
        outcome = apply_update(doc, update, **kwargs)
    except CommandError:
        return
    assert bson.encode(doc) == bson.encode(doc)  # the pre-image is intact (encodable)
    if outcome.oplog_o is None:
        assert bson.encode(outcome.new_doc) == bson.encode(doc)
        return
    if outcome.is_replacement:
        assert outcome.oplog_o == outcome.new_doc
        return
    assert list(outcome.oplog_o) == ["$v", "diff"] and outcome.oplog_o["$v"] == 2
    diff = outcome.oplog_o["diff"]
    check_well_formed(diff)
    replayed = apply_doc_diff(doc, diff)
    assert bson.encode(replayed) == bson.encode(outcome.new_doc), (doc, update, diff)


SETTINGS = settings(max_examples=400, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(DOCS, updates())
def test_operator_update_diffs_replay_to_the_new_document(doc: dict, update: dict) -> None:
    snapshot = bson.encode(doc)
    _check(doc, update)
    assert bson.encode(doc) == snapshot, "apply_update mutated its input"


@SETTINGS
@given(DOCS, st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=2),
       st.sampled_from(["$a", "$b", "$c.0"]))
def test_pipeline_update_diffs_replay_to_the_new_document(doc: dict, unset: list,
                                                           source: str) -> None:
    pipeline = [{"$set": {"n": source, "b.q": 1}}, {"$unset": unset}]
    _check(doc, pipeline)


@SETTINGS
@given(DOCS, st.sampled_from(["a", "b", "c"]), VALUES)
def test_all_positional_updates_replay(doc: dict, field: str, value: Any) -> None:
    _check(doc, {"$set": {f"{field}.$[].x": value}})
    _check(doc, {"$set": {f"{field}.$[e]": value}}, array_filters=[{"e": {"$gte": 0}}])


@pytest.mark.parametrize("seed_doc", [
    {"_id": 1, "a": {"b": [1, {"c": 2}], "d": "x" * 50}, "e": list(range(20))},
])
def test_large_pipeline_update_uses_a_diff(seed_doc: dict) -> None:
    pipeline = [{"$set": {"a.d": "y", "e": {"$literal": list(range(19))}}}]
    outcome = apply_update(seed_doc, pipeline)
    assert outcome.oplog_o == {"$v": 2, "diff": {"sa": {"u": {"d": "y"}},
                                                 "se": {"a": True, "l": 19}}}
    assert apply_doc_diff(seed_doc, outcome.oplog_o["diff"]) == outcome.new_doc
