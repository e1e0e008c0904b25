"""The two ``$v: 2`` paths give the same bytes: the C-codec fast path
(``deltadict.apply_delta_codec``) either vouches for its result, which must
then equal the raw walk's (``delta.apply_delta_raw``), or steps aside (None)
for everything the codec would not reproduce exactly."""

from __future__ import annotations

import random
import struct

import bson
import pytest
from bson import Int64
from bson.binary import Binary
from bson.son import SON
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backupflows.oplog.delta import apply_delta_raw
from backupflows.oplog.deltadict import apply_delta_codec
from backupflows.oplog.update import InvalidUpdate, apply_delta
from backupflows.sandbox.sampledocs import KINDS, DocumentFactory


def S(*pairs):  # noqa: N802 - short SON builder
    return SON(list(pairs))


def element(t: int, name: str, value: bytes) -> bytes:
    return bytes((t,)) + name.encode() + b"\x00" + value


def doc_of(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def string(s: bytes) -> bytes:
    return struct.pack("<i", len(s) + 1) + s + b"\x00"


ID = element(0x10, "_id", struct.pack("<i", 1))
A = element(0x10, "a", struct.pack("<i", 7))


def both(raw_doc: bytes, diff: SON | bytes) -> bytes:
    """The raw walk's result; the fast path must agree or step aside."""
    raw_diff = diff if isinstance(diff, bytes) else bson.encode(diff)
    expected = apply_delta_raw(raw_doc, raw_diff)
    assert apply_delta_codec(raw_doc, raw_diff) in (None, expected)
    assert apply_delta(raw_doc, raw_diff) == expected
    return expected


# Documents the C codec does not round-trip: the fast path must step aside,
# and apply_delta must give the raw walk's bytes (untouched fields as they were).
EXOTIC = {
    "duplicate field names": doc_of(ID, A, element(0x10, "a", struct.pack("<i", 8))),
    "_id not first": doc_of(A, ID),
    "DBRef fields out of order": doc_of(ID, element(0x03, "r", doc_of(
        element(0x10, "$id", struct.pack("<i", 1)), element(0x02, "$ref", string(b"c"))))),
    "symbol": doc_of(ID, element(0x0E, "s", string(b"sym"))),
    "undefined": doc_of(ID, element(0x06, "u", b"")),
    "DBPointer": doc_of(ID, element(0x0C, "p", string(b"c") + b"\x01" * 12)),
    "regex flags out of order": doc_of(ID, element(0x0B, "re", b"^a\x00mi\x00")),
    "boolean byte 2": doc_of(ID, element(0x08, "b", b"\x02")),
    "array keys not 0, 1": doc_of(ID, element(0x04, "arr", doc_of(
        element(0x10, "5", struct.pack("<i", 1)), element(0x10, "x", struct.pack("<i", 2))))),
    "invalid UTF-8": doc_of(ID, element(0x02, "s", string(b"\xff\xfe"))),
    "old binary subtype 2, inner length wrong": doc_of(ID, element(
        0x05, "bin", struct.pack("<i", 7) + b"\x02" + struct.pack("<i", 2) + b"abc")),
}
OLD_BINARY = doc_of(ID, element(0x05, "bin", struct.pack("<i", 7) + b"\x02"
                                + struct.pack("<i", 3) + b"abc"))


@pytest.mark.parametrize("name", list(EXOTIC))
def test_documents_the_codec_does_not_round_trip_take_the_raw_walk(name: str) -> None:
    raw = EXOTIC[name]
    diff = S(("u", S(("new", 1),)))
    assert apply_delta_codec(raw, bson.encode(diff)) is None
    out = both(raw, diff)
    assert out[4:len(raw) - 1] == raw[4:-1]  # every old field byte for byte, then the new one


def test_a_dbref_shaped_subdocument_under_a_subdiff_takes_the_raw_walk() -> None:
    raw = bson.encode(S(("_id", 1), ("r", S(("$ref", "c"), ("$id", 1)))))
    diff = S(("sr", S(("u", S(("x", 1),)),)))
    assert apply_delta_codec(raw, bson.encode(diff)) is None
    assert bson.decode(both(raw, diff))["r"] == bson.DBRef("c", 1, x=1)


def test_a_dbref_in_canonical_order_round_trips_through_the_fast_path() -> None:
    raw = bson.encode(S(("_id", 1), ("r", S(("$ref", "c"), ("$id", 1)))))
    diff = S(("u", S(("a", 2),)))
    assert apply_delta_codec(raw, bson.encode(diff)) == both(raw, diff)


@pytest.mark.parametrize("diff", [
    S(("u", S(("_id", 1),))),
    S(("i", S(("_id", 1),))),
    S(("d", S(("_id", False),))),
    S(("s_id", S(("u", S(("x", 1),)),))),
])
def test_a_diff_naming_the_top_level_id_takes_the_raw_walk(diff: SON) -> None:
    raw = bson.encode(S(("_id", 1), ("a", 2)))
    assert apply_delta_codec(raw, bson.encode(diff)) is None
    both(raw, diff)


@pytest.mark.parametrize("value", [
    element(0x0E, "v", string(b"sym")), element(0x06, "v", b""),
    element(0x0B, "v", b"x\x00mi\x00"), element(0x08, "v", b"\x03"),
])
def test_diff_values_the_codec_does_not_round_trip_are_copied_by_the_raw_walk(value: bytes) -> None:
    raw = bson.encode(S(("_id", 1), ("a", 2)))
    diff = doc_of(element(0x03, "u", doc_of(value)))
    assert apply_delta_codec(raw, diff) is None
    assert both(raw, diff).endswith(value + b"\x00")


def test_binary_patches_of_subtype_2_take_the_raw_walk() -> None:
    raw = OLD_BINARY
    assert apply_delta_codec(raw, bson.encode(S(("u", S(("a", 1),))))) is not None
    diff = S(("b", S(("bin", S(("o", 2), ("d", b"zz"))),)))
    assert apply_delta_codec(raw, bson.encode(diff)) is None
    both(raw, diff)
    patch = S(("b", S(("bin", S(("o", 0), ("d", Binary(b"zz", 2)))),)))
    assert apply_delta_codec(bson.encode({"_id": 1, "bin": b"abc"}), bson.encode(patch)) is None


def test_duplicate_names_in_a_diff_section_are_an_error_on_both_paths() -> None:
    diff = doc_of(element(0x03, "u", doc_of(A, A)))
    raw = bson.encode({"_id": 1})
    assert apply_delta_codec(raw, diff) is None
    with pytest.raises(InvalidUpdate, match="duplicate"):
        apply_delta(raw, diff)


@pytest.mark.parametrize("kind", KINDS)
def test_sample_documents_go_through_the_fast_path(kind: str) -> None:
    """Realistic documents of every kind round-trip: the fast path is taken
    (not silently skipped) and agrees with the raw walk."""
    factory = DocumentFactory(kind, random.Random(7))
    rng = random.Random(8)
    for _ in range(40):
        raw = factory.next_document()
        doc = bson.decode(raw)
        names = [n for n in doc if n != "_id"]
        diff = S(("d", S((rng.choice(names), False),)), ("u", S(("n", Int64(5)), ("m", [1, 2]))),
                 ("i", S(("added", {"x": 1.5}),)))
        if len(set(diff["d"]) | set(diff["u"])) < 3:
            continue
        out = apply_delta_codec(raw, bson.encode(diff))
        assert out is not None and out == apply_delta_raw(raw, bson.encode(diff))


# ------------------------------------------- byte-level fuzz of both paths

def _int32(n: int) -> bytes:
    return struct.pack("<i", n)


_NAMES = st.sampled_from(["a", "b", "x", "0", "1", "$ref", "$id", "_id", "é"])
_SCALAR_ELEMENTS = st.one_of(
    st.integers(-3, 3).map(lambda n: (0x10, _int32(n))),
    st.integers(-3, 3).map(lambda n: (0x12, struct.pack("<q", n))),
    st.sampled_from([1.5, -0.0, float("inf")]).map(lambda f: (0x01, struct.pack("<d", f))),
    st.sampled_from([b"s", b"", b"\xc3\xa9", b"\xff"]).map(lambda s: (0x02, string(s))),
    st.sampled_from([b"sym"]).map(lambda s: (0x0E, string(s))),
    st.sampled_from([b"\x00", b"\x01", b"\x02"]).map(lambda b: (0x08, b)),
    st.just((0x0A, b"")), st.just((0x06, b"")), st.just((0xFF, b"")),
    st.sampled_from([b"a\x00\x00", b"a\x00im\x00", b"a\x00mi\x00"]).map(lambda r: (0x0B, r)),
    st.sampled_from([0, 2, 4, 0x80]).map(
        lambda sub: (0x05, _int32(7) + bytes((sub,)) + _int32(3) + b"abc")),
    st.just((0x09, struct.pack("<q", 1_700_000_000_000))),
)


def _document(children: list[tuple[str, tuple[int, bytes]]], array: bool = False) -> bytes:
    return doc_of(*(element(t, str(i) if array else name, v)
                    for i, (name, (t, v)) in enumerate(children)))


_VALUES = st.recursive(
    _SCALAR_ELEMENTS,
    lambda inner: st.one_of(
        st.lists(st.tuples(_NAMES, inner), max_size=3).map(lambda c: (0x03, _document(c))),
        st.lists(st.tuples(_NAMES, inner), max_size=3).map(lambda c: (0x04, _document(c, True))),
    ),
    max_leaves=8,
)


@st.composite
def _diffs(draw: st.DrawFn, names: list[str]) -> bytes:
    """Mostly well-formed document diffs, with an occasional malformed one
    (a name in two sections, sections out of order, an empty diff)."""
    sections = []
    fresh = draw(st.permutations(names)) if draw(st.integers(0, 9)) else names * 2
    for letter in "duib":
        if draw(st.booleans()):
            fields, fresh = fresh[:draw(st.integers(0, 2))], fresh[2:]
            if letter == "b":
                sections.append((0x03, letter, _document(
                    [(n, (0x03, doc_of(element(0x10, "o", _int32(draw(st.integers(0, 4)))),
                                       element(0x05, "d", _int32(1) + b"\x00z"))))
                     for n in fields])))
            else:
                sections.append((0x03, letter, _document(
                    [(n, draw(_VALUES)) for n in fields])))
    for name in fresh[:draw(st.integers(0, 2))]:
        if draw(st.booleans()):
            sub = doc_of(element(0x08, "a", b"\x01"), element(0x10, "l", _int32(draw(
                st.integers(0, 3)))), element(0x10, "u0", _int32(9)))
        else:
            sub = _document([("u", (0x03, _document([("y", draw(_VALUES))])))])
        sections.append((0x03, "s" + name, sub))
    if draw(st.integers(0, 9)) == 0 and sections:
        sections = draw(st.permutations(sections))
    return doc_of(*(element(t, n, v) for t, n, v in sections))


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=5), st.data())
def test_both_paths_agree_on_arbitrary_bson(fields: list, data: st.DataObject) -> None:
    raw = _document([("_id", (0x10, _int32(1))), *fields])
    diff = data.draw(_diffs(["a", "b", "x", "$ref", "z"]))
    try:
        expected = apply_delta_raw(raw, diff)
    except InvalidUpdate:
        assert apply_delta_codec(raw, diff) is None
        with pytest.raises(InvalidUpdate):
            apply_delta(raw, diff)
        return
    assert apply_delta_codec(raw, diff) in (None, expected)
    assert apply_delta(raw, diff) == expected
