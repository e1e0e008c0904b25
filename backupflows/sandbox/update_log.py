"""The $v:2 oplog diff of an operator update, built like the server's V2LogBuilder.

Follows src/mongo/db/update/v2_log_builder.cpp and the diff_tree serializer of
document_diff_serialization.cpp:
- modifiers log the paths they changed as they are applied: logUpdatedField
  (u), logCreatedField (i, with the index of the first created component) and
  logDeletedField (d);
- a path is walked component by component; an existing sub-document becomes
  a sub-diff ``s<field>``, a component followed by an array index becomes an
  array diff ``{a: true, ...}``, and components from the first created one on
  become one inserted document (``{$set: {"a.b.c": 1}}`` on ``{}`` logs
  ``{i: {a: {b: {c: 1}}}}``);
- a document diff is serialized as d, then u, then i, then the s<field>
  sub-diffs; inside each section the fields appear in the order they were
  logged (the update tree applies fields in lexicographic order);
- an array diff is ``a: true`` then ``u<idx>``/``s<idx>`` entries in ascending
  index order; created and updated array elements are both ``u<idx>``.  The
  update tree never writes ``l`` (array appends and padding are implicit).
"""

from __future__ import annotations

from typing import Any

from backupflows.sandbox.query_values import copy_value

FIELD, INDEX = "field", "index"  # RuntimeUpdatePath::ComponentType


class _Leaf:
    __slots__ = ("kind", "value")

    def __init__(self, kind: str, value: Any = None) -> None:
        self.kind = kind  # "u", "i", "d"
        self.value = value


class _DocNode:
    """DocumentSubDiffNode (existing sub-document) or DocumentInsertionNode."""

    def __init__(self, inserted: bool) -> None:
        self.inserted = inserted
        self.children: dict[str, Any] = {}


class _ArrayNode:
    def __init__(self) -> None:
        self.children: dict[int, Any] = {}


class V2LogBuilder:
    """Collects logged paths and serializes them as a $v:2 diff."""

    def __init__(self) -> None:
        self._root = _DocNode(inserted=False)
        self.empty = True

    def updated(self, parts: list[str], types: list[str], value: Any) -> None:
        self._add(parts, types, _Leaf("u", copy_value(value)), None)

    def created(self, parts: list[str], types: list[str], first_new: int, value: Any) -> None:
        self._add(parts, types, _Leaf("i", copy_value(value)), first_new)

    def deleted(self, parts: list[str], types: list[str]) -> None:
        self._add(parts, types, _Leaf("d"), None)

    def _add(self, parts: list[str], types: list[str], leaf: _Leaf,
             first_new: int | None) -> None:
        self.empty = False
        node: Any = self._root
        for i, part in enumerate(parts[:-1]):
            child = _get_child(node, part)
            if child is None:
                new_path = first_new is not None and i >= first_new
                if types[i + 1] == INDEX:
                    child = _ArrayNode()
                else:
                    child = _DocNode(inserted=new_path)
                _add_child(node, part, child)
            node = child
        _add_child(node, parts[-1], leaf)

    def serialize(self) -> dict:
        return {"$v": 2, "diff": _write_doc(self._root)}


def _get_child(node: Any, part: str) -> Any:
    if isinstance(node, _ArrayNode):
        return node.children.get(int(part))
    return node.children.get(part)


def _add_child(node: Any, part: str, child: Any) -> None:
    if isinstance(node, _ArrayNode):
        node.children[int(part)] = child
    else:
        node.children[part] = child


def _write_doc(node: _DocNode) -> dict:
    sections: dict[str, dict] = {"d": {}, "u": {}, "i": {}}
    subdiffs: dict[str, dict] = {}
    for name, child in node.children.items():
        if isinstance(child, _Leaf):
            sections[child.kind][name] = False if child.kind == "d" else child.value
        elif isinstance(child, _DocNode) and child.inserted:
            sections["i"][name] = _write_inserted(child)
        elif isinstance(child, _DocNode):
            subdiffs["s" + name] = _write_doc(child)
        else:
            subdiffs["s" + name] = _write_array(child)
    out = {key: section for key, section in sections.items() if section}
    out.update(subdiffs)
    return out


def _write_inserted(node: _DocNode) -> dict:
    out = {}
    for name, child in node.children.items():
        out[name] = _write_inserted(child) if isinstance(child, _DocNode) else child.value
    return out


def _write_array(node: _ArrayNode) -> dict:
    out: dict[str, Any] = {"a": True}
    for idx in sorted(node.children):
        child = node.children[idx]
        if isinstance(child, _Leaf):
            out[f"u{idx}"] = child.value
        elif isinstance(child, _DocNode) and child.inserted:
            out[f"u{idx}"] = _write_inserted(child)
        elif isinstance(child, _DocNode):
            out[f"s{idx}"] = _write_doc(child)
        else:
            out[f"s{idx}"] = _write_array(child)
    return out
