"""Applying legacy modifier-style updates (``$set``/``$unset``, with or
without ``$v: 1``, written by MongoDB 3.6 to 4.4) to raw BSON documents.

Rules (``shared/reference/oplog.md``, "Updates"; the server's update tree,
``update_object_node.cpp``, applied with ``fromOplogApplication``):
- paths are dotted; a missing intermediate field is created as an object;
- a numeric component indexes an array; setting past the end pads with nulls;
- ``$unset`` removes a field, but sets an array element to null;
- existing fields change in place; new fields are appended in the order of
  their paths, compared component by component, all-digit components
  numerically (the tree's ``pathsupport::cmpPathsAndArrayIndexes`` order);
- a path that cannot be created (through a scalar, or a non-numeric component
  on an array) is a no-op for that modifier only.

Only the values a modifier touches are rebuilt: untouched elements are copied
as raw bytes and the new values are the entry's own element bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cmp_to_key
from typing import Any

from backupflows.oplog.rawdoc import (
    ARRAY,
    BSON_ERRORS,
    NULL,
    OBJECT,
    InvalidUpdate,
    check_document,
    document,
    elements,
    index_name,
    raw_of,
)

__all__ = ["apply_modifiers", "InvalidUpdate"]

# A leaf of the update tree: (BSON type, value bytes) for $set, None for $unset.
_Leaf = tuple[int, bytes] | None
_UNSET = None
_Node = dict[bytes, Any]  # name -> _Node (inner) or _LeafBox

# Largest index $set may pad an array to (the server refuses to backfill an
# array beyond 1,500,000 elements: pathsupport kMaxPaddingAllowed).
_MAX_PADDING = 1_500_000


class _LeafBox:
    __slots__ = ("path", "value")

    def __init__(self, path: bytes, value: _Leaf) -> None:
        self.path = path
        self.value = value


def _show(path: bytes) -> str:
    return repr(path.decode("utf-8", "replace"))


# ---------------------------------------------------------------- the tree

def _build_tree(o_raw: bytes) -> _Node:
    """The update tree of ``$set``/``$unset`` (``$v`` is ignored)."""
    tree: _Node = {}
    for t, pos, name_end, _end in elements(o_raw):
        op = o_raw[pos + 1:name_end]
        if op == b"$v":
            continue
        if op not in (b"$set", b"$unset"):
            raise InvalidUpdate(f"unsupported modifier {_show(op)} in update "
                                "(oplog entries only carry $set and $unset)")
        if t != OBJECT:
            raise InvalidUpdate(f"{_show(op)} must be a document, got BSON type 0x{t:02x}")
        for vt, vpos, vname_end, vend in elements(o_raw, name_end + 1):
            path = o_raw[vpos + 1:vname_end]
            value = (vt, o_raw[vname_end + 1:vend]) if op == b"$set" else _UNSET
            _add_path(tree, path, value)
    return tree


def _add_path(tree: _Node, path: bytes, value: _Leaf) -> None:
    parts = path.split(b".")
    if not all(parts):
        raise InvalidUpdate(f"empty field name in update path {_show(path)}")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if isinstance(child, _LeafBox):
            raise InvalidUpdate(f"conflicting update paths {_show(child.path)} and {_show(path)}")
        node = child
    other = node.get(parts[-1])
    if other is not None:
        what = _show(other.path) if isinstance(other, _LeafBox) else "a path under it"
        raise InvalidUpdate(f"conflicting update paths {_show(path)} and {what}")
    node[parts[-1]] = _LeafBox(path, value)


def _compare_names(a: bytes, b: bytes) -> int:
    """cmpPathsAndArrayIndexes: two all-digit names of different lengths
    compare as numbers (the shorter first); anything else bytewise."""
    if len(a) != len(b) and a.isdigit() and b.isdigit():
        return -1 if len(a) < len(b) else 1
    return (a > b) - (a < b)


_NAME_ORDER = cmp_to_key(_compare_names)


def _sorted_names(node: _Node) -> list[bytes]:
    return sorted(node, key=_NAME_ORDER)


# ---------------------------------------------------------------- applying

def _element(t: int, name: bytes, value: bytes) -> bytes:
    return bytes((t,)) + name + b"\x00" + value


def _apply_object(buf: bytes, start: int, node: _Node) -> bytes:
    """The object at ``buf[start]`` with the subtree ``node`` applied."""
    out: list[bytes] = []
    seen: set[bytes] = set()
    for t, pos, name_end, value_end in elements(buf, start):
        name = buf[pos + 1:name_end]
        child = node.get(name)
        if child is None:
            out.append(buf[pos:value_end])
            continue
        seen.add(name)
        new = _apply_existing(buf, t, name_end + 1, value_end, child)
        if new is not None:
            out.append(_element(new[0], name, new[1]))
    for name in _sorted_names(node):
        if name not in seen:
            created = _create(node[name])
            if created is not None:
                out.append(_element(created[0], name, created[1]))
    return document(out)


def _apply_existing(buf: bytes, t: int, value_start: int, value_end: int,
                    child: Any) -> tuple[int, bytes] | None:
    """(type, value) of an existing field or array element under ``child``;
    None for $unset (the caller removes a field, nulls an array element)."""
    if isinstance(child, _LeafBox):
        return child.value
    if t == OBJECT:
        return OBJECT, _apply_object(buf, value_start, child)
    if t == ARRAY:
        return ARRAY, _apply_array(buf, value_start, child)
    return t, buf[value_start:value_end]  # through a scalar: not viable, a no-op


def _apply_array(buf: bytes, start: int, node: _Node) -> bytes:
    """The array at ``buf[start]`` with the subtree ``node`` applied; only
    all-digit names address elements (others are not viable: no-op)."""
    by_index = {int(name): child for name, child in node.items() if name.isdigit()}
    out: list[bytes] = []
    idx = 0
    for t, _pos, name_end, value_end in elements(buf, start):
        child = by_index.pop(idx, None)
        if child is None:
            new: tuple[int, bytes] | None = (t, buf[name_end + 1:value_end])
        else:
            new = _apply_existing(buf, t, name_end + 1, value_end, child)
        vt, value = new if new is not None else (NULL, b"")  # $unset nulls an element
        out.append(_element(vt, index_name(idx), value))
        idx += 1
    for index in sorted(by_index):
        created = _create(by_index[index])
        if created is None:
            continue
        if index > _MAX_PADDING:
            raise InvalidUpdate(f"can't backfill array to more than {_MAX_PADDING} elements")
        while idx < index:
            out.append(b"\x0a" + index_name(idx) + b"\x00")
            idx += 1
        out.append(_element(created[0], index_name(idx), created[1]))
        idx += 1
    return document(out)


def _create(child: Any) -> tuple[int, bytes] | None:
    """(type, value) of a field that does not exist yet, built from ``child``
    ($set leaves and objects for missing intermediates); None if nothing is
    set under it."""
    if isinstance(child, _LeafBox):
        return child.value
    out: list[bytes] = []
    for name in _sorted_names(child):
        created = _create(child[name])
        if created is not None:
            out.append(_element(created[0], name, created[1]))
    return (OBJECT, document(out)) if out else None


# ----------------------------------------------------------------------- API

def apply_modifiers(raw_doc: bytes, o: Mapping[str, Any] | bytes) -> bytes:
    """Apply a modifier-style update ``o`` (``{$set: …, $unset: …}``, with or
    without ``$v: 1``; a mapping, a RawBSONDocument or raw bytes) to the raw
    BSON document ``raw_doc`` and return the new raw document.

    Raises InvalidUpdate for unknown operators, empty path components,
    conflicting paths, or a document that is not valid BSON.
    """
    o_raw = raw_of(o)
    check_document(o_raw, "update")
    check_document(raw_doc)
    try:
        tree = _build_tree(o_raw)
        return _apply_object(raw_doc, 0, tree)
    except BSON_ERRORS as exc:
        raise InvalidUpdate(f"document or update is not valid BSON: {exc}") from None
