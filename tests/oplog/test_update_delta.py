"""$v: 2 delta updates applied to raw BSON documents: every rule, every error,
and the real time-series oplog from mongo-tools."""

from __future__ import annotations

import re
import struct

import bson
import pytest
from bson import Int64
from bson.binary import Binary
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.son import SON

from backupflows.bsonorder import skip_value
from backupflows.errors import OplogError
from backupflows.oplog.update import (
    InvalidUpdate,
    apply_delta,
    apply_update,
    classify,
    validate_delta,
)
from tests.fixture_paths import MONGO_TOOLS  # noqa: E402

TS_DUMP = MONGO_TOOLS / "mongorestore/testdata/timeseries_tests/ts_dump_with_oplog"


def S(*pairs: tuple) -> SON:  # noqa: N802 - short ordered-document literal
    return SON(list(pairs))


def raw_doc(*pairs: tuple) -> bytes:
    """A raw document from (name, value) pairs; names may repeat."""
    body = b"".join(bson.encode({name: value})[4:-1] for name, value in pairs)
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def apply(doc: SON, diff) -> SON:
    return bson.decode(apply_delta(bson.encode(doc), diff), CodecOptions(document_class=SON))


def items(son: SON) -> list:
    """Nested (name, value) lists, so order is part of the comparison."""
    if isinstance(son, dict):
        return [(k, items(v)) for k, v in son.items()]
    if isinstance(son, list):
        return [items(v) for v in son]
    return son


# ------------------------------------------------------------ document rules

def test_update_replaces_in_place_and_appends_missing_fields():
    doc = S(("_id", 1), ("a", 1), ("b", 2))
    out = apply(doc, S(("u", S(("z", 9), ("a", "x")))))
    assert items(out) == [("_id", 1), ("a", "x"), ("b", 2), ("z", 9)]


def test_delete_drops_fields_and_ignores_missing_ones():
    out = apply(S(("_id", 1), ("a", 1), ("b", 2)), S(("d", S(("a", False), ("nope", False)))))
    assert items(out) == [("_id", 1), ("b", 2)]


def test_insert_moves_existing_field_to_the_end_without_duplicating_it():
    doc = S(("_id", 1), ("a", 1), ("b", 2))
    raw = apply_delta(bson.encode(doc), S(("i", S(("a", 5), ("c", 3)))))
    assert items(bson.decode(raw, CodecOptions(document_class=SON))) == [
        ("_id", 1), ("b", 2), ("a", 5), ("c", 3)]
    assert raw.count(b"\x10a\x00") == 1


def test_appended_fields_come_in_diff_order_updates_before_inserts():
    doc = S(("_id", 1), ("k", 0))
    diff = S(("u", S(("u2", 1), ("u1", 1))), ("i", S(("i2", 1), ("i1", 1))))
    assert [k for k in apply(doc, diff)] == ["_id", "k", "u2", "u1", "i2", "i1"]


def test_values_keep_their_bson_types():
    doc = S(("_id", 1), ("n", 1))
    raw = apply_delta(bson.encode(doc), S(("u", S(("n", Int64(7)), ("f", 7.0), ("i", 7)))))
    assert raw == bson.encode(S(("_id", 1), ("n", Int64(7)), ("f", 7.0), ("i", 7)))
    assert type(bson.decode(raw)["n"]) is Int64


def test_untouched_elements_are_copied_byte_for_byte():
    # A regex whose flags are not in pymongo's canonical order, and a
    # DBRef-shaped document with its fields out of the usual order: a
    # decode + encode round trip would rewrite both.
    odd_regex = b"\x0brx\x00ab\x00mi\x00"
    odd_ref = bson.encode(S(("$id", 1), ("$ref", "c")))
    body = (b"\x10_id\x00\x01\x00\x00\x00" + odd_regex + b"\x03ref\x00" + odd_ref
            + b"\x10n\x00\x01\x00\x00\x00")
    doc = struct.pack("<i", len(body) + 5) + body + b"\x00"
    out = apply_delta(doc, S(("u", S(("n", 2),))))
    assert odd_regex in out and b"\x03ref\x00" + odd_ref in out
    assert out.endswith(b"\x10n\x00\x02\x00\x00\x00\x00")


def test_subdiff_on_object_recurses_and_on_missing_field_does_nothing():
    doc = S(("_id", 1), ("o", S(("x", 1), ("y", S(("z", 1),)))))
    diff = S(("so", S(("u", S(("x", 2),)), ("sy", S(("i", S(("w", 3),)),)))),
             ("smissing", S(("u", S(("q", 1),)))))
    assert items(apply(doc, diff)) == [
        ("_id", 1), ("o", [("x", 2), ("y", [("z", 1), ("w", 3)])])]


@pytest.mark.parametrize("value", [5, "str", [1, 2], None])
def test_document_subdiff_on_other_kind_gives_null(value):
    out = apply(S(("_id", 1), ("f", value), ("g", 1)), S(("sf", S(("u", S(("x", 1),)))),))
    assert items(out) == [("_id", 1), ("f", None), ("g", 1)]


@pytest.mark.parametrize("value", [5, S(("0", 1),), None])
def test_array_subdiff_on_other_kind_gives_null(value):
    out = apply(S(("_id", 1), ("f", value)), S(("sf", S(("a", True), ("u0", 9))),))
    assert items(out) == [("_id", 1), ("f", None)]


def test_field_named_like_a_section_letter_and_empty_name():
    doc = S(("_id", 1), ("u", S(("d", 1),)), ("", 1))
    diff = S(("u", S(("", 2),)), ("su", S(("d", S(("d", False),)),)))
    assert items(apply(doc, diff)) == [("_id", 1), ("u", []), ("", 2)]


# --------------------------------------------------------------- array rules

def test_array_update_and_subdiff_in_place():
    doc = S(("_id", 1), ("a", [1, S(("x", 1),), [1, 2], 4]))
    diff = S(("sa", S(("a", True), ("u0", "zero"), ("s1", S(("u", S(("x", 2),)),)),
                      ("s2", S(("a", True), ("u1", 3))))),)
    assert apply(doc, diff)["a"] == ["zero", {"x": 2}, [1, 3], 4]


def test_array_truncation_with_l():
    doc = S(("_id", 1), ("a", [1, 2, 3, 4]))
    assert apply(doc, S(("sa", S(("a", True), ("l", 2))),))["a"] == [1, 2]
    assert apply(doc, S(("sa", S(("a", True), ("l", 0))),))["a"] == []
    assert apply(doc, S(("sa", S(("a", True), ("l", 2), ("u1", 9))),))["a"] == [1, 9]


def test_array_growth_pads_gaps_with_null():
    doc = S(("_id", 1), ("a", [1]))
    assert apply(doc, S(("sa", S(("a", True), ("l", 4))),))["a"] == [1, None, None, None]
    assert apply(doc, S(("sa", S(("a", True), ("u3", 7))),))["a"] == [1, None, None, 7]
    assert apply(doc, S(("sa", S(("a", True), ("l", 5), ("u2", 7))),))["a"] == [
        1, None, 7, None, None]


def test_array_subdiff_past_the_end_or_on_wrong_kind_appends_null():
    doc = S(("_id", 1), ("a", [1, S(("x", 1),)]))
    diff = S(("sa", S(("a", True), ("s0", S(("u", S(("y", 1),)),)),
                      ("s1", S(("a", True), ("u0", 1))), ("s3", S(("u", S(("y", 1),)),)))),)
    assert apply(doc, diff)["a"] == [None, None, None, None]


def test_array_output_names_elements_by_position():
    # An array stored with odd keys comes out named 0, 1, 2 like the server's
    # BSONArrayBuilder writes it.
    odd = raw_doc(("5", "a"), ("x", "b"))
    body = raw_doc(("_id", 1))[4:-1] + b"\x04arr\x00" + odd
    doc = struct.pack("<i", len(body) + 5) + body + b"\x00"
    out = apply_delta(doc, S(("sarr", S(("a", True), ("u2", "c"))),))
    assert out == bson.encode(S(("_id", 1), ("arr", ["a", "b", "c"])))


def test_sections_are_recognised_by_their_first_letter_like_the_server():
    doc = S(("_id", 1), ("a", 1), ("b", 2))
    assert items(apply(doc, S(("del", S(("a", False),)), ("upd", S(("b", 3),))))) == [
        ("_id", 1), ("b", 3)]


def test_leading_zero_array_index_is_accepted():
    assert apply(S(("a", [1, 2]),), S(("sa", S(("a", True), ("u01", 5))),))["a"] == [1, 5]


# -------------------------------------------------------------- binary rules

def _bin(data: bytes, subtype: int = 7) -> Binary:
    return Binary(data, subtype)


def test_binary_patch_keeps_prefix_and_appends_with_same_subtype():
    doc = S(("_id", 1), ("c", _bin(b"abcdef")))
    out = apply(doc, S(("b", S(("c", S(("o", 4), ("d", Binary(b"XYZ", 0))))),)))
    assert out["c"] == _bin(b"abcdXYZ")
    out = apply(doc, S(("b", S(("c", S(("o", 6), ("d", Binary(b"!", 0))))),)))
    assert out["c"] == _bin(b"abcdef!")
    out = apply(doc, S(("b", S(("c", S(("d", Binary(b"", 0)), ("o", Int64(0))))),)))
    assert out["c"] == _bin(b"")


def test_binary_patch_past_the_end_or_on_non_binary_leaves_value_unchanged():
    doc = S(("_id", 1), ("c", _bin(b"abc")), ("s", "str"))
    diff = S(("b", S(("c", S(("o", 4), ("d", b"x"))), ("s", S(("o", 0), ("d", b"x"))),
                     ("missing", S(("o", 0), ("d", b"x"))))),)
    assert apply_delta(bson.encode(doc), diff) == bson.encode(doc)


def test_binary_section_with_other_sections_and_in_subdiff():
    doc = S(("_id", 1), ("control", S(("count", 1),)), ("data", S(("t", _bin(b"12")),)))
    diff = S(("scontrol", S(("u", S(("count", 2),)),)),
             ("sdata", S(("i", S(("new", _bin(b"n")),)), ("b", S(("t", S(("o", 2), ("d", b"3"))),)))))
    out = apply(doc, diff)
    assert out["control"] == {"count": 2}
    assert items(out["data"]) == [("t", _bin(b"123")), ("new", _bin(b"n"))]


# -------------------------------------------------------------------- errors

def error_of(diff) -> str:
    with pytest.raises(InvalidUpdate) as info:
        apply_delta(bson.encode(S(("_id", 1), ("a", [1]), ("o", S(("x", 1),)))), diff)
    with pytest.raises(InvalidUpdate):
        validate_delta(diff)
    return str(info.value)


def test_invalid_update_is_an_oplog_error():
    assert issubclass(InvalidUpdate, OplogError)


@pytest.mark.parametrize("diff, message", [
    (S(), "non-empty"),
    (S(("so", S())), "non-empty"),
    (S(("sa", S(("a", True), ("s0", S())))), "non-empty"),
    (S(("u", S(("x", 1),)), ("i", S(("x", 2),))), "duplicate field name in diff: 'x'"),
    (S(("d", S(("o", False),)), ("so", S(("u", S(("y", 1),)),))), "duplicate field name in diff: 'o'"),
    (S(("b", S(("a", S(("o", 0), ("d", b"")))),), ("sa", S(("a", True), ("l", 0)))), "duplicate"),
    (S(("i", S(("x", 1),)), ("u", S(("y", 1),))), "Unexpected section: 'u'"),
    (S(("so", S(("u", S(("y", 1),)),)), ("u", S(("y", 1),))), "Did not expect more sections"),
    (S(("x", S(("y", 1),)),), "Unexpected section: 'x'"),
    (S(("a", True), ("u0", 1)), "Unexpected section: 'a'"),
    (S(("", S(("y", 1),)),), "non-empty"),
    (S(("u", 5),), "'u' section of diff to be an object"),
    (S(("so", [1]),), "'s' section of diff to be an object"),
    (S(("sa", S(("a", 1), ("u0", 1)))), "array header to be bool"),
    (S(("sa", S(("a", False), ("u0", 1)))), "array header to be value true"),
    (S(("sa", S(("a", True), ("l", Int64(2))))), "'l' section"),
    (S(("sa", S(("a", True), ("l", 2.0)))), "'l' section"),
    (S(("sa", S(("a", True), ("l", -1)))), "bad new array length -1"),
    (S(("sa", S(("a", True), ("u0", 1), ("l", 3)))), "field name 'l'"),
    (S(("sa", S(("a", True), ("x1", 1)))), "Expected either 'u' (update) or 's' (sub diff)"),
    (S(("sa", S(("a", True), ("u", 1)))), "field name 'u'"),
    (S(("sa", S(("a", True), ("ux", 1)))), "expected an integer index but got 'ux'"),
    (S(("sa", S(("a", True), ("u-1", 1)))), "expected an integer index"),
    (S(("sa", S(("a", True), ("u+1", 1)))), "expected an integer index"),
    (S(("sa", S(("a", True), ("u2", 1), ("u1", 1)))), "indexes must be ascending"),
    (S(("sa", S(("a", True), ("u1", 1), ("s1", S(("u", S(("x", 1),)),))))), "ascending"),
    (S(("sa", S(("a", True), ("l", 2), ("u2", 1)))), "beyond its new length 2"),
    (S(("sa", S(("a", True), ("u99999999999", 1)))), "too large"),
    (S(("sa", S(("a", True), ("s0", 1)))), "expected sub diff at index 0"),
    (S(("b", S(("a", 1),)),), "must be an object"),
    (S(("b", S(("a", S(("o", 0),)),)),), "needs o"),
    (S(("b", S(("a", S(("d", b"x"),)),)),), "needs o"),
    (S(("b", S(("a", S(("o", -1), ("d", b"x"))),)),), "needs o"),
    (S(("b", S(("a", S(("o", 1.5), ("d", b"x"))),)),), "unexpected field 'o'"),
    (S(("b", S(("a", S(("o", 0), ("d", b"x"), ("e", 1))),)),), "unexpected field 'e'"),
    (S(("b", S(("a", S(("o", 0), ("d", "str"))),)),), "unexpected field 'd'"),
])
def test_invalid_diffs_are_rejected_with_a_message(diff, message):
    assert message in error_of(diff)


def test_errors_in_subdiffs_of_missing_fields_are_still_reported():
    assert "ascending" in error_of(S(("snope", S(("a", True), ("u2", 1), ("u1", 1))),))


@pytest.mark.parametrize("raw, message", [
    (raw_doc(("u", {"x": 1}), ("u", {"y": 1})), "Unexpected section: 'u'"),
    (raw_doc(("d", {"x": False}))[:-1], "diff is not valid BSON"),
    (raw_doc(("d", {"x": False}))[:-2] + b"\x00", "diff is not valid BSON"),
])
def test_raw_diffs_with_repeated_sections_or_bad_framing(raw, message):
    with pytest.raises(InvalidUpdate, match=re.escape(message)):
        apply_delta(bson.encode({"_id": 1}), raw)


def test_repeated_name_inside_one_section_is_rejected():
    inner = raw_doc(("x", 1), ("x", 2))
    body = b"\x03u\x00" + inner
    diff = struct.pack("<i", len(body) + 5) + body + b"\x00"
    with pytest.raises(InvalidUpdate, match="duplicate field name in diff: 'x'"):
        apply_delta(bson.encode({"_id": 1}), diff)


def test_corrupt_document_is_an_invalid_update():
    good = bson.encode(S(("_id", 1), ("a", "text")))
    with pytest.raises(InvalidUpdate, match="not valid BSON"):
        apply_delta(good[:-3] + b"\x00", S(("u", S(("a", 1),)),))
    broken = bytearray(good)
    broken[4] = 0x42  # unknown BSON type
    with pytest.raises(InvalidUpdate, match="not valid BSON"):
        apply_delta(bytes(broken), S(("u", S(("b", 1),)),))


def test_diff_may_be_given_raw():
    doc = bson.encode(S(("_id", 1), ("a", 1)))
    diff = S(("u", S(("a", 2),)),)
    expected = bson.encode(S(("_id", 1), ("a", 2)))
    assert apply_delta(doc, bson.encode(diff)) == expected
    assert apply_delta(doc, RawBSONDocument(bson.encode(diff))) == expected


# ------------------------------------------------------------- classify & co

@pytest.mark.parametrize("o, kind", [
    (S(("$v", 2), ("diff", S(("u", S(("a", 1),)),))), "delta"),
    (S(("diff", S(("u", S(("a", 1),)),)), ("$v", Int64(2))), "delta"),
    (S(("$v", 2.0), ("diff", S())), "delta"),
    (S(("$v", 1), ("$set", S(("a", 1),))), "modifier"),
    (S(("$set", S(("a", 1),)),), "modifier"),
    (S(("$unset", S(("a", True),)),), "modifier"),
    (S(("_id", 1), ("a", 1)), "replacement"),
    (S(("a", 1), ("$v", 1)), "replacement"),
    (S(), "replacement"),
    (S(("$v", True), ("x", 1)), "modifier"),
])
def test_classify(o, kind):
    assert classify(o) == kind
    assert classify(RawBSONDocument(bson.encode(o))) == kind


def test_apply_update_dispatches_and_checks_versions():
    doc = bson.encode(S(("_id", 1), ("a", 1)))
    assert bson.decode(apply_update(doc, S(("$v", 2), ("diff", S(("u", S(("a", 2),)),)))))["a"] == 2
    assert bson.decode(apply_update(doc, S(("$set", S(("a", 3),)),)))["a"] == 3
    assert bson.decode(apply_update(doc, S(("b", 1),))) == {"_id": 1, "b": 1}
    with pytest.raises(InvalidUpdate, match="needs a document 'diff'"):
        apply_update(doc, S(("$v", 2),))
    with pytest.raises(InvalidUpdate, match="unsupported update version"):
        apply_update(doc, S(("$v", 3), ("$set", S(("a", 1),))))


# ------------------------------------------------- the real time-series oplog

def _duplicates(raw: bytes, start: int = 0) -> list[bytes]:
    """Field names that occur twice in one (sub)document, at any depth."""
    end = start + struct.unpack_from("<i", raw, start)[0] - 1
    pos, names, dups = start + 4, set(), []
    while pos < end:
        t = raw[pos]
        name_end = raw.index(b"\x00", pos + 1)
        name = raw[pos + 1:name_end]
        dups += [name] if name in names else []
        names.add(name)
        if t in (3, 4):
            dups += _duplicates(raw, name_end + 1)
        pos = skip_value(t, raw, name_end + 1)
    return dups


def _replay_timeseries(diff_as_son: bool) -> tuple[dict, int]:
    raw_opts = CodecOptions(document_class=RawBSONDocument)
    with open(TS_DUMP / "timeseries_test/system.buckets.foo_ts.bson", "rb") as f:
        buckets = {bson.decode(d.raw)["_id"]: d.raw for d in bson.decode_file_iter(f, raw_opts)}
    existing_inserts = 0
    with open(TS_DUMP / "oplog.bson", "rb") as f:
        for entry in bson.decode_file_iter(f, raw_opts):
            assert entry["op"] == "u" and classify(entry["o"]) == "delta"
            _id = entry["o2"]["_id"]
            diff = entry["o"]["diff"]
            son = bson.decode(diff.raw, CodecOptions(document_class=SON))
            ts_diff = son["sdata"]["sts"]["i"]
            data = bson.decode(buckets[_id])["data"]
            existing_inserts += sum(1 for k in ts_diff if k in data["ts"])
            buckets[_id] = apply_delta(buckets[_id], son if diff_as_son else diff)
    return buckets, existing_inserts


@pytest.mark.skipif(not TS_DUMP.exists(), reason="mongo-tools fixtures not present")
def test_timeseries_fixture_reaches_its_end_state():
    buckets, existing_inserts = _replay_timeseries(diff_as_son=True)
    assert existing_inserts > 0  # the dump already reflects some diffs
    assert len(buckets) == 10
    measurements = 0
    for raw in buckets.values():
        assert _duplicates(raw) == []
        data = bson.decode(raw, CodecOptions(document_class=SON))["data"]
        keys = list(data["ts"])
        assert keys == [str(i) for i in range(len(keys))]
        assert list(data["_id"]) == keys and list(data["measurement"]) == keys
        measurements += len(keys)
    assert measurements == 2164
    raw_buckets, _ = _replay_timeseries(diff_as_son=False)
    assert raw_buckets == buckets
