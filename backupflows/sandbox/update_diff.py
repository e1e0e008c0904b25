"""The before/after diff a pipeline-style update logs (computeOplogDiff).

Follows src/mongo/db/update/document_diff_calculator.cpp and the size tracking
of diff_tree in document_diff_serialization.h/.cpp (MongoDB 7.0):
- fields of the pre- and post-image are walked in parallel: binary-equal
  fields are skipped; a field with the same name and different value is an
  update (u), or, when both values are documents or both arrays, a sub-diff
  (s<field>); a pre-image field whose name differs from the post-image field
  at that position is deleted (d) unless the post-image has it later; the
  rest of the post-image is inserted (i);
- deletes are logged first for trailing pre-image fields, then for the
  skipped ones in byte order of their names (the server keeps them in a
  std::set);
- arrays are compared index by index: changed elements are u<idx> (or s<idx>
  for two documents / two arrays), extra post-image elements are u<idx>, and
  a shrunk array gets l: <new length>;
- a (sub-)diff whose approximate BSON size grows past the post-image's size
  is abandoned: the sub-document is logged whole with u, and at the top level
  the update falls back to a full replacement.  The top-level size check adds
  15 bytes of padding for the {$v: 2, diff: ...} wrapper
  (update_oplog_entry::kSizeOfDeltaOplogEntryMetadata), and the serialized
  diff must also be strictly smaller than the post-image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backupflows.sandbox.query_values import binary_equal, bson_type, doc_size, value_size

DELTA_METADATA_PADDING = 15
_EMPTY_DOC_DIFF = 5
_EMPTY_ARRAY_DIFF = 9


class _DocDiff:
    def __init__(self, padding: int = 0) -> None:
        self.size = padding + _EMPTY_DOC_DIFF
        self.sections: dict[str, list[tuple[str, Any]]] = {"d": [], "u": [], "i": [], "s": []}

    def add(self, section: str, name: str, value: Any) -> None:
        self.size += len(name.encode()) + 2
        if section == "s":
            self.size += value.size + 1
        elif section == "d":
            self.size += 1
        else:
            self.size += value_size(value)
        if section != "s" and not self.sections[section]:
            self.size += 8
        self.sections[section].append((name, value))

    def serialize(self) -> dict:
        out: dict[str, Any] = {}
        for key in ("d", "u", "i"):
            if self.sections[key]:
                out[key] = {name: (False if key == "d" else value)
                            for name, value in self.sections[key]}
        for name, child in self.sections["s"]:
            out["s" + name] = child.serialize()
        return out


class _ArrayDiff:
    def __init__(self) -> None:
        self.size = _EMPTY_ARRAY_DIFF
        self.children: dict[int, tuple[str, Any]] = {}
        self.resize: int | None = None

    def add(self, section: str, idx: int, value: Any) -> None:
        self.size += 1 + len(str(idx)) + 2
        self.size += value.size if section == "s" else value_size(value)
        self.children[idx] = (section, value)

    def set_resize(self, length: int) -> None:
        self.resize = length
        self.size += 1 + 4 + 2

    def serialize(self) -> dict:
        out: dict[str, Any] = {"a": True}
        if self.resize is not None:
            out["l"] = self.resize
        for idx in sorted(self.children):
            section, value = self.children[idx]
            out[f"{section}{idx}"] = value.serialize() if section == "s" else value
        return out


def _sub_diff(node: Any, key: Any, pre: Any, post: Any, ignore_size: bool) -> None:
    if bson_type(pre) == 3:
        sub: Any = _doc_diff(pre, post, ignore_size)
    else:
        sub = _array_diff(pre, post, ignore_size)
    if sub is None:
        node.add("u", key, post)
    else:
        node.add("s", key, sub)


def _both_containers(pre: Any, post: Any) -> bool:
    kind = bson_type(pre)
    return kind == bson_type(post) and kind in (3, 4)


def _doc_diff(pre: Mapping, post: Mapping, ignore_size: bool,
              padding: int = 0) -> _DocDiff | None:
    node = _DocDiff(padding)
    pre_items, post_items = list(pre.items()), list(post.items())
    post_size = doc_size(post)
    deletes: set[str] = set()
    i = j = 0
    while i < len(pre_items) and j < len(post_items):
        if not ignore_size and post_size < node.size:
            return None
        (pre_name, pre_val), (post_name, post_val) = pre_items[i], post_items[j]
        if pre_name != post_name:
            deletes.add(pre_name)
            i += 1
            continue
        if not binary_equal(pre_val, post_val):
            if _both_containers(pre_val, post_val):
                _sub_diff(node, pre_name, pre_val, post_val, ignore_size)
            else:
                node.add("u", pre_name, post_val)
        i += 1
        j += 1
    for name, _ in pre_items[i:]:
        node.add("d", name, None)
    for name, value in post_items[j:]:
        node.add("i", name, value)
        deletes.discard(name)
    for name in sorted(deletes, key=lambda n: n.encode()):
        node.add("d", name, None)
    return node if ignore_size or post_size > node.size else None


def _array_diff(pre: list, post: list, ignore_size: bool) -> _ArrayDiff | None:
    node = _ArrayDiff()
    post_size = value_size(post)
    common = min(len(pre), len(post))
    for idx in range(common):
        if not ignore_size and post_size < node.size:
            return None
        if not binary_equal(pre[idx], post[idx]):
            if _both_containers(pre[idx], post[idx]):
                _sub_diff(node, idx, pre[idx], post[idx], ignore_size)
            else:
                node.add("u", idx, post[idx])
    for idx in range(common, len(post)):
        node.add("u", idx, post[idx])
    if len(pre) > len(post):
        node.set_resize(len(post))
    return node if ignore_size or post_size > node.size else None


def compute_oplog_diff(pre: Mapping, post: Mapping,
                       padding: int = DELTA_METADATA_PADDING) -> dict | None:
    """The $v:2 diff from ``pre`` to ``post``, or None when a full replacement
    is smaller (doc_diff::computeOplogDiff)."""
    node = _doc_diff(pre, post, False, padding)
    if node is None:
        return None
    diff = node.serialize()
    if doc_size(diff) < doc_size(post):
        return diff
    return None


def compute_full_diff(pre: Mapping, post: Mapping) -> dict:
    """computeOplogDiff_forTest: the diff without any size limit."""
    node = _doc_diff(pre, post, True)
    assert node is not None
    return node.serialize()
