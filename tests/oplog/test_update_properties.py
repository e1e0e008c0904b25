"""Property tests: random documents and random well-formed updates, checked
against small independent implementations of the reference algorithms
(shared/reference/oplog.md) that work on plain ordered dicts."""

from __future__ import annotations

import copy
import datetime
from functools import cmp_to_key
from typing import Any

import bson
from bson import Int64
from bson.binary import Binary, UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.decimal128 import Decimal128
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.son import SON
from bson.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupflows.oplog.delta import apply_delta_raw
from backupflows.oplog.deltadict import apply_delta_codec
from backupflows.oplog.update import apply_delta, apply_modifiers

NAMES = st.sampled_from(["a", "b", "c", "x", "y", "_id", "0", "1", "9", "10", "é"])

SCALARS = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.booleans(),
    st.none(),
    st.binary(max_size=8).map(lambda b: Binary(b, 7)),
    st.binary(max_size=8),
    st.binary(min_size=12, max_size=12).map(ObjectId),
    st.integers(-(2**40), 2**40).map(
        lambda ms: datetime.datetime(1970, 1, 1) + datetime.timedelta(milliseconds=ms)),
    st.integers(-999, 999).map(lambda n: Decimal128(str(n))),
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)).map(lambda t: Timestamp(*t)),
    st.sampled_from([MinKey(), MaxKey()]),
)


def _son(pairs: list[tuple[str, Any]]) -> SON:
    return SON(pairs)


def enc(doc: SON) -> bytes:
    """Encode keeping the field order exactly (bson.encode moves a top-level
    _id first)."""
    body = b"".join(bson.encode({k: v})[4:-1] for k, v in doc.items())
    return (len(body) + 5).to_bytes(4, "little") + body + b"\x00"


VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(st.tuples(NAMES, inner), max_size=4, unique_by=lambda p: p[0]).map(_son),
    ),
    max_leaves=12,
)
DOCS = st.lists(st.tuples(NAMES, VALUES), max_size=6, unique_by=lambda p: p[0]).map(_son)

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------- reference delta algorithm

def ref_doc(doc: SON, diff: SON) -> SON:
    """The reference's document-diff algorithm on ordered dicts."""
    dels = diff.get("d", {})
    ups = diff.get("u", SON())
    ins = diff.get("i", SON())
    bins = diff.get("b", {})
    subs = {k[1:]: v for k, v in diff.items() if k.startswith("s")}
    out, written = SON(), set()
    for k, v in doc.items():
        if k in dels or k in ins:
            continue
        if k in ups:
            out[k] = ups[k]
            written.add(k)
        elif k in bins:
            out[k] = ref_binary(v, bins[k])
        elif k in subs:
            out[k] = ref_sub(v, subs[k])
        else:
            out[k] = v
    for k, v in list(ups.items()) + list(ins.items()):
        if k not in written:
            out[k] = v
    return out


def ref_sub(value: Any, sub: SON) -> Any:
    if "a" in sub and next(iter(sub)) == "a":
        return ref_array(value, sub) if isinstance(value, list) else None
    return ref_doc(value, sub) if isinstance(value, dict) else None


def ref_array(arr: list, diff: SON) -> list:
    new_len = diff.get("l")
    mods = {int(k[1:]): (k[0], v) for k, v in diff.items() if k not in ("a", "l")}
    kept = len(arr) if new_len is None else min(len(arr), new_len)
    out = []
    for idx in range(kept):
        kind, v = mods.get(idx, ("keep", None))
        out.append(arr[idx] if kind == "keep" else v if kind == "u" else ref_sub(arr[idx], v))
    total = new_len if new_len is not None else max([kept] + [i + 1 for i in mods])
    for idx in range(kept, total):
        kind, v = mods.get(idx, ("gap", None))
        out.append(v if kind == "u" else None)
    return out


def ref_binary(value: Any, patch: SON) -> Any:
    if isinstance(value, bytes) and not isinstance(value, Binary):
        value = Binary(value, 0)
    if not isinstance(value, Binary) or patch["o"] > len(value):
        return value
    new = Binary(bytes(value)[:patch["o"]] + bytes(patch["d"]), value.subtype)
    return bytes(new) if new.subtype == 0 else new


# ----------------------------------------------- diff generator

def gen_doc_diff(draw: Any, doc: SON | None, depth: int) -> SON:
    present = list(doc) if isinstance(doc, dict) else []
    extra = [n for n in draw(st.lists(NAMES, max_size=3, unique=True)) if n not in present]
    sections: dict[str, list] = {"d": [], "u": [], "i": [], "b": [], "s": []}
    for name in present + extra:
        value = doc[name] if name in present else None
        choice = draw(st.sampled_from(["keep", "keep", "d", "u", "i", "s", "b"]))
        if choice in ("d", "u", "i"):
            sections[choice].append((name, False if choice == "d" else draw(VALUES)))
        elif choice == "s" and depth < 3:
            sections["s"].append(("s" + name, gen_sub(draw, value, depth + 1)))
        elif choice == "b":
            size = len(value) if isinstance(value, bytes) else 0
            sections["b"].append((name, SON([("o", draw(st.integers(0, size + 2))),
                                             ("d", Binary(draw(st.binary(max_size=4)), 0))])))
    if not any(sections.values()):
        sections["u"].append(("new", draw(VALUES)))
    diff = SON()
    for letter in "duib":
        if sections[letter]:
            diff[letter] = SON(draw(st.permutations(sections[letter])))
    for name, sub in draw(st.permutations(sections["s"])):
        diff[name] = sub
    return diff


def gen_sub(draw: Any, value: Any, depth: int) -> SON:
    """A sub-diff for ``value``: mostly of the matching kind, sometimes not."""
    as_array = isinstance(value, list)
    if draw(st.integers(0, 5)) == 0:
        as_array = not as_array
    if as_array:
        return gen_array_diff(draw, value if isinstance(value, list) else [], depth)
    return gen_doc_diff(draw, value if isinstance(value, dict) else None, depth)


def gen_array_diff(draw: Any, arr: list, depth: int) -> SON:
    new_len = draw(st.one_of(st.none(), st.integers(0, len(arr) + 3)))
    upper = new_len if new_len is not None else len(arr) + 3
    indexes = sorted(draw(st.sets(st.integers(0, max(upper - 1, 0)), max_size=3)))
    diff = SON([("a", True)])
    if new_len is not None:
        diff["l"] = new_len
    for idx in indexes:
        if idx >= upper:
            continue
        if depth < 3 and draw(st.booleans()):
            diff[f"s{idx}"] = gen_sub(draw, arr[idx] if idx < len(arr) else None, depth + 1)
        else:
            diff[f"u{idx}"] = draw(VALUES)
    return diff


@SETTINGS
@given(doc=DOCS, data=st.data())
def test_apply_delta_matches_the_reference_algorithm(doc: SON, data: st.DataObject) -> None:
    diff = gen_doc_diff(data.draw, doc, 0)
    expected = enc(ref_doc(doc, diff))
    assert apply_delta(enc(doc), diff) == expected
    assert apply_delta(enc(doc), bson.encode(diff)) == expected
    # both paths: the raw walk, and the C-codec path wherever it vouches
    assert apply_delta_raw(enc(doc), diff) == expected
    assert apply_delta_codec(enc(doc), bson.encode(diff)) in (None, expected)
    assert apply_delta_codec(enc(doc), bson.encode(diff)) is not None or _exotic(doc, diff)


@SETTINGS
@given(doc=DOCS, data=st.data())
def test_codec_results_pass_its_own_fidelity_guard(doc: SON, data: st.DataObject) -> None:
    """What lets the applier skip re-encoding a document the codec path wrote
    (``doc_checked``): its result always re-encodes to its own bytes, and a
    next update of it gives the raw walk's bytes with or without the check."""
    first = apply_delta_codec(enc(doc), bson.encode(gen_doc_diff(data.draw, doc, 0)))
    if first is None:
        return
    assert bson.encode(bson.decode(first, _CODEC)) == first
    again = bson.decode(first, _SON)
    diff = bson.encode(gen_doc_diff(data.draw, again, 0))
    checked = apply_delta_codec(first, diff, doc_checked=True)
    assert checked == apply_delta_codec(first, diff)
    assert checked in (None, apply_delta_raw(first, diff))


_CODEC = CodecOptions(uuid_representation=UuidRepresentation.UNSPECIFIED,
                      datetime_conversion=DatetimeConversion.DATETIME_MS)
_SON = CodecOptions(document_class=SON, uuid_representation=UuidRepresentation.UNSPECIFIED,
                    datetime_conversion=DatetimeConversion.DATETIME_MS)


def _exotic(doc: SON, diff: SON) -> bool:
    """The fast path steps aside only for what the C codec does not
    round-trip (here: a top-level _id that is not first) or a diff that
    names _id."""
    return (bson.encode(bson.decode(enc(doc))) != enc(doc)
            or bson.encode(bson.decode(enc(diff))) != enc(diff) or b"_id" in enc(diff))


# ----------------------------------------------- reference modifier algorithm

def _cmp_name(a: str, b: str) -> int:
    if len(a) != len(b) and a.isdigit() and b.isdigit():
        return -1 if len(a) < len(b) else 1
    return (a > b) - (a < b)


def _cmp_path(a: list[str], b: list[str]) -> int:
    for x, y in zip(a, b):
        if x != y:
            return _cmp_name(x, y)
    return len(a) - len(b)


def _build(rest: list[str], value: Any) -> Any:
    for part in reversed(rest):
        value = SON([(part, value)])
    return value


def ref_modify(node: Any, parts: list[str], op: str, value: Any) -> None:
    head, rest = parts[0], parts[1:]
    if isinstance(node, dict):
        if head not in node:
            if op == "set":
                node[head] = _build(rest, value)
        elif not rest:
            if op == "set":
                node[head] = value
            else:
                del node[head]
        elif isinstance(node[head], dict | list):
            ref_modify(node[head], rest, op, value)
    elif isinstance(node, list) and head.isdigit():
        idx = int(head)
        if idx >= len(node):
            if op == "set":
                node.extend([None] * (idx - len(node)))
                node.append(_build(rest, value))
        elif not rest:
            node[idx] = value if op == "set" else None
        elif isinstance(node[idx], dict | list):
            ref_modify(node[idx], rest, op, value)


def ref_modifiers(doc: SON, ops: list[tuple[str, str, Any]]) -> SON:
    out = copy.deepcopy(doc)
    for path, op, value in sorted(ops, key=cmp_to_key(
            lambda x, y: _cmp_path(x[0].split("."), y[0].split(".")))):
        ref_modify(out, path.split("."), op, value)
    return out


def gen_path(draw: Any, doc: Any) -> str:
    parts: list[str] = []
    node = doc
    for _ in range(draw(st.integers(1, 3))):
        options = [draw(NAMES)]
        if isinstance(node, dict) and node:
            options.append(draw(st.sampled_from(list(node))))
        if isinstance(node, list):
            options.append(str(draw(st.integers(0, len(node) + 2))))
        part = draw(st.sampled_from(options))
        parts.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            node = None
    return ".".join(parts)


def _conflicts(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


@SETTINGS
@given(doc=DOCS, data=st.data())
def test_apply_modifiers_matches_the_reference_algorithm(doc: SON, data: st.DataObject) -> None:
    ops: list[tuple[str, str, Any]] = []
    for _ in range(data.draw(st.integers(1, 5))):
        path = gen_path(data.draw, doc)
        if not any(_conflicts(path, p) for p, _, _ in ops):
            op = data.draw(st.sampled_from(["set", "set", "unset"]))
            ops.append((path, op, data.draw(VALUES) if op == "set" else 1))
    sets = SON([(p, v) for p, op, v in ops if op == "set"])
    unsets = SON([(p, v) for p, op, v in ops if op == "unset"])
    o = SON([("$v", 1)])
    for name, part in data.draw(st.permutations([("$set", sets), ("$unset", unsets)])):
        if part:
            o[name] = part
    expected = enc(ref_modifiers(doc, ops))
    assert apply_modifiers(enc(doc), o) == expected
