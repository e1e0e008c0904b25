"""Legacy modifier-style updates ($set/$unset, with or without $v: 1) and
replacements, applied to raw BSON documents."""

from __future__ import annotations

import struct

import bson
import pytest
from bson import Int64
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.son import SON

from backupflows.oplog.update import InvalidUpdate, apply_modifiers, apply_replacement


def S(*pairs: tuple) -> SON:  # noqa: N802 - short ordered-document literal
    return SON(list(pairs))


def apply(doc: SON, o) -> SON:
    return bson.decode(apply_modifiers(bson.encode(doc), o), CodecOptions(document_class=SON))


def items(son):
    if isinstance(son, dict):
        return [(k, items(v)) for k, v in son.items()]
    if isinstance(son, list):
        return [items(v) for v in son]
    return son


DOC = S(("_id", 1), ("a", 1), ("o", S(("x", 1), ("y", 2))), ("arr", [1, S(("k", 1),), 3]),
        ("s", "str"), ("n", None))


def test_set_replaces_in_place_and_keeps_types():
    raw = apply_modifiers(bson.encode(DOC), S(("$set", S(("a", Int64(5)), ("o.x", 2.5))),))
    out = bson.decode(raw, CodecOptions(document_class=SON))
    assert list(out) == list(DOC) and list(out["o"]) == ["x", "y"]
    assert type(out["a"]) is Int64 and out["o"]["x"] == 2.5


def test_with_or_without_v1():
    o = S(("$set", S(("a", 2),)),)
    assert apply(DOC, o) == apply(DOC, S(("$v", 1), ("$set", S(("a", 2),))))


def test_new_fields_are_appended_in_path_order():
    o = S(("$set", S(("zz", 1), ("b.y", 1), ("b.x", 1), ("aa", 1), ("o.z", 1))),)
    out = apply(DOC, o)
    assert list(out)[-3:] == ["aa", "b", "zz"]
    assert list(out["b"]) == ["x", "y"] and list(out["o"]) == ["x", "y", "z"]


def test_numeric_names_are_ordered_as_numbers():
    out = apply(S(("_id", 1),), S(("$set", S(("10", 1), ("9", 1), ("a", 1), ("100", 1))),))
    assert list(out) == ["_id", "9", "10", "100", "a"]


def test_set_and_unset_merge_into_one_order():
    o = S(("$unset", S(("a", 1), ("zz", 1))), ("$set", S(("c", 1), ("b", 1))))
    assert list(apply(DOC, o)) == ["_id", "o", "arr", "s", "n", "b", "c"]


def test_missing_intermediates_are_created_as_objects_even_for_numbers():
    out = apply(DOC, S(("$set", S(("p.q.r", 1), ("m.0", "x"))),))
    assert out["p"] == {"q": {"r": 1}} and out["m"] == {"0": "x"}


def test_numeric_component_indexes_arrays_and_pads_with_null():
    out = apply(DOC, S(("$set", S(("arr.0", "z"), ("arr.1.k", 2), ("arr.5", 6))),))
    assert out["arr"] == ["z", {"k": 2}, 3, None, None, 6]


def test_set_inside_a_new_array_element_creates_an_object():
    out = apply(S(("_id", 1), ("arr", [])), S(("$set", S(("arr.2.b", 1),)),))
    assert out["arr"] == [None, None, {"b": 1}]


def test_unset_removes_fields_and_nulls_array_elements():
    o = S(("$unset", S(("a", True), ("o.y", ""), ("arr.1", 1), ("arr.9", 1), ("nope.x", 1))),)
    out = apply(DOC, o)
    assert items(out) == [("_id", 1), ("o", [("x", 1)]), ("arr", [1, None, 3]), ("s", "str"),
                          ("n", None)]


def test_path_that_cannot_be_created_is_a_noop_for_that_modifier_only():
    o = S(("$set", S(("s.x", 1), ("n.x", 1), ("a.b.c", 1), ("arr.k", 1), ("arr.1.k", 7),
                     ("new", 1))),)
    out = apply(DOC, o)
    assert out["s"] == "str" and out["n"] is None and out["a"] == 1
    assert out["arr"] == [1, {"k": 7}, 3] and out["new"] == 1
    assert apply(DOC, S(("$set", S(("arr.0.x", 1),)),))["arr"] == [1, {"k": 1}, 3]


def test_unset_through_scalar_or_array_name_is_a_noop():
    o = S(("$unset", S(("s.x", 1), ("arr.k", 1), ("arr.0.k", 1))),)
    assert apply_modifiers(bson.encode(DOC), o) == bson.encode(DOC)


def test_nothing_to_do_leaves_bytes_identical():
    assert apply_modifiers(bson.encode(DOC), S(("$v", 1), ("$set", S()))) == bson.encode(DOC)


def test_update_given_raw():
    o = S(("$set", S(("a", 2),)),)
    expected = apply_modifiers(bson.encode(DOC), o)
    assert apply_modifiers(bson.encode(DOC), bson.encode(o)) == expected
    assert apply_modifiers(bson.encode(DOC), RawBSONDocument(bson.encode(o))) == expected


@pytest.mark.parametrize("o, message", [
    (S(("$inc", S(("a", 1),)),), "unsupported modifier '$inc'"),
    (S(("$set", S(("a", 1),)), ("b", 1)), "unsupported modifier 'b'"),
    (S(("$set", 5),), "must be a document"),
    (S(("$set", S(("a..b", 1),)),), "empty field name"),
    (S(("$set", S(("", 1),)),), "empty field name"),
    (S(("$set", S(("a.", 1),)),), "empty field name"),
    (S(("$set", S(("o", 1), ("o.x", 1))),), "conflicting update paths 'o' and 'o.x'"),
    (S(("$set", S(("o.x", 1), ("o", 1))),), "conflicting update paths 'o' and a path under it"),
    (S(("$set", S(("a", 1),)), ("$unset", S(("a", 1),))), "conflicting update paths"),
    (S(("$set", S(("arr.2000000", 1),)),), "can't backfill"),
])
def test_invalid_modifier_updates(o, message):
    with pytest.raises(InvalidUpdate) as info:
        apply_modifiers(bson.encode(DOC), o)
    assert message in str(info.value)


def test_corrupt_document():
    raw = bson.encode(DOC)
    with pytest.raises(InvalidUpdate, match="not valid BSON"):
        apply_modifiers(raw[:-1], S(("$set", S(("a", 1),)),))
    bad = bytearray(raw)
    bad[4] = 0x42
    with pytest.raises(InvalidUpdate, match="not valid BSON"):
        apply_modifiers(bytes(bad), S(("$set", S(("a", 1),)),))


# -------------------------------------------------------------- replacement

def test_replacement_keeps_the_existing_id_first():
    old = bson.encode(S(("a", 0), ("_id", Int64(7)), ("b", 1)))
    new = apply_replacement(old, bson.encode(S(("x", 1), ("_id", 7), ("y", 2))))
    assert new == bson.encode(S(("_id", Int64(7)), ("x", 1), ("y", 2)))


def test_replacement_without_a_document_takes_the_id_of_o():
    assert apply_replacement(None, S(("x", 1), ("_id", "k"))) == bson.encode(
        S(("_id", "k"), ("x", 1)))


def test_replacement_by_an_empty_document_leaves_only_the_id():
    assert apply_replacement(bson.encode(S(("_id", 1), ("a", 1))), S()) == bson.encode({"_id": 1})


def test_replacement_errors():
    with pytest.raises(InvalidUpdate, match="no _id"):
        apply_replacement(None, S(("x", 1),))
    with pytest.raises(InvalidUpdate, match="not valid BSON"):
        apply_replacement(None, bson.encode(S(("x", 1),))[:-1])
    body = b"\x10_id\x00\x01\x00\x00\x00\x42x\x00"
    with pytest.raises(InvalidUpdate, match="not valid BSON"):
        apply_replacement(None, struct.pack("<i", len(body) + 5) + body + b"\x00")
