"""The update tree of an operator update, applied as the server's UpdateNode tree.

Follows src/mongo/db/update/update_object_node.cpp, update_array_node.cpp and
update_driver.cpp:
- every modifier path is merged into one tree; internal nodes are documents
  (UpdateObjectNode) or, before a `$[<id>]` component, arrays (UpdateArrayNode);
  two paths that meet at a leaf or where one is a prefix of the other are
  ConflictingUpdateOperators (40);
- an object node applies its children in lexicographic (byte) order of their
  field names, the positional `$` child in its place for the matched index;
  this order decides both the order of the oplog diff sections and where new
  fields land (appended in that order);
- the path walked so far is shared by all nodes: ``taken`` holds existing
  components with their kind (field or array index) and ``create`` the
  missing ones; once a child created the missing path, its parent continues
  from the created element;
- an array node applies its children to every matching element; when more
  than one element matches, the children do not log themselves: the node logs
  the whole array if more than one element changed, else the changed element.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backupflows.sandbox.errors import (
    BAD_VALUE,
    CONFLICTING_UPDATE_OPERATORS,
    FAILED_TO_PARSE,
    CommandError,
)
from backupflows.sandbox.query_values import is_doc, parse_index, render_element
from backupflows.sandbox.update_log import FIELD, INDEX, V2LogBuilder

EMPTY_FIELD_NAME = 56


class _Holder(list):
    """The one-element list holding the document being updated."""


class Ref:
    """A reference to an element: a container (dict or list) and a key."""

    __slots__ = ("parent", "key")

    def __init__(self, parent: Any, key: Any) -> None:
        self.parent, self.key = parent, key

    @property
    def value(self) -> Any:
        return self.parent[self.key]

    @value.setter
    def value(self, new: Any) -> None:
        self.parent[self.key] = new

    @property
    def name(self) -> str:
        """The element's field name ("" for the document itself)."""
        return "" if isinstance(self.parent, _Holder) else str(self.key)

    def is_array(self) -> bool:
        return isinstance(self.value, list)

    def child(self, part: str) -> Ref | None:
        value = self.value
        if is_doc(value):
            return Ref(value, part) if part in value else None
        if isinstance(value, list):
            idx = parse_index(part)
            if idx is not None and idx < len(value):
                return Ref(value, idx)
        return None

    def describe(self) -> str:
        return render_element(self.name, self.value)


def root_ref(doc: dict) -> Ref:
    return Ref(_Holder([doc]), 0)


@dataclass
class ApplyContext:
    """UpdateExecutor::ApplyParams plus the shared path state."""

    doc: dict = field(default_factory=dict)
    insert: bool = False
    matched_field: str | None = None
    log: V2LogBuilder | None = None
    filters: dict[str, Callable[[Any], bool]] = field(default_factory=dict)
    taken: list[tuple[str, str]] = field(default_factory=list)
    create: list[str] = field(default_factory=list)
    now: Callable[[], Any] | None = None
    cluster_time: Callable[[], Any] | None = None

    def taken_parts(self) -> list[str]:
        return [p for p, _ in self.taken]

    def taken_types(self) -> list[str]:
        return [t for _, t in self.taken]

    def dotted(self, extra: list[str] | None = None) -> str:
        return ".".join(self.taken_parts() + (extra or []))


class UpdateNode:
    kind = "leaf"

    def apply(self, ref: Ref, ctx: ApplyContext) -> bool:
        """Apply to the element at ``ref``; return True if nothing changed."""
        raise NotImplementedError


def _child_kind(ref: Ref) -> str:
    return INDEX if ref.is_array() else FIELD


def apply_child(child: UpdateNode, name: str, elem: Ref, ctx: ApplyContext) -> tuple[Ref, bool]:
    """applyChild() of update_object_node.cpp; returns (element, noop)."""
    taken, create = ctx.taken, ctx.create
    before = len(taken)
    child_ref = None if create else elem.child(name)
    if child_ref is not None:
        taken.append((name, _child_kind(elem)))
    else:
        child_ref = elem
        create.append(name)
    noop = child.apply(child_ref, ctx)
    if create:
        create.pop()
    else:
        taken.pop()
    if len(taken) > before:
        for part, _ in taken[before:]:
            elem = elem.child(part)  # type: ignore[assignment]
    elif create:
        first = elem.child(create[0])
        if first is not None:
            elem = first
            taken.append((create[0], _child_kind(elem)))
            for part in create[1:]:
                kind = _child_kind(elem)
                elem = elem.child(part)  # type: ignore[assignment]
                taken.append((part, kind))
            create.clear()
    return elem, noop


class ObjectNode(UpdateNode):
    kind = "object"

    def __init__(self) -> None:
        self.children: dict[str, UpdateNode] = {}
        self.positional: UpdateNode | None = None

    def get(self, name: str) -> UpdateNode | None:
        return self.positional if name == "$" else self.children.get(name)

    def set(self, name: str, node: UpdateNode) -> None:
        if name == "$":
            self.positional = node
        else:
            self.children[name] = node

    def apply(self, ref: Ref, ctx: ApplyContext) -> bool:
        matched = ctx.matched_field
        pending = self.positional is not None
        if pending and not matched:
            raise CommandError(BAD_VALUE, "The positional operator did not find the match "
                               "needed from the query.")
        noop = True
        for name in sorted(self.children):
            child = self.children[name]
            if pending and name == matched:
                child = merge_nodes(self.positional, child, ctx.dotted(ctx.create + [name]))
                pending = False
            elif pending and matched < name:
                ref, sub = apply_child(self.positional, matched, ref, ctx)
                noop &= sub
                pending = False
            ref, sub = apply_child(child, name, ref, ctx)
            noop &= sub
        if pending:
            ref, sub = apply_child(self.positional, matched, ref, ctx)
            noop &= sub
        return noop


class ArrayNode(UpdateNode):
    kind = "array"

    def __init__(self) -> None:
        self.children: dict[str, UpdateNode] = {}

    def get(self, name: str) -> UpdateNode | None:
        return self.children.get(name)

    def set(self, name: str, node: UpdateNode) -> None:
        self.children[name] = node

    def apply(self, ref: Ref, ctx: ApplyContext) -> bool:
        if ctx.create:
            raise CommandError(BAD_VALUE, f"The path '{ctx.dotted(ctx.create)}' must exist "
                               "in the document in order to apply array updates.")
        array = ref.value
        if not isinstance(array, list):
            raise CommandError(BAD_VALUE, "Cannot apply array updates to non-array element "
                               f"{ref.describe()}")
        matching = self._matching(array, ctx)
        log = ctx.log
        if len(matching) > 1:
            ctx.log = None
        modified = []
        try:
            for idx, nodes in matching.items():
                node = nodes[0]
                for other in nodes[1:]:
                    node = merge_nodes(node, other, ctx.dotted([str(idx)]))
                ctx.taken.append((str(idx), INDEX))
                try:
                    if not node.apply(Ref(array, idx), ctx):
                        modified.append(idx)
                finally:
                    ctx.taken.pop()
        finally:
            ctx.log = log
        if len(matching) > 1 and log is not None and modified:
            self._log(log, ctx, array, modified)
        return not modified

    def _matching(self, array: list, ctx: ApplyContext) -> dict[int, list[UpdateNode]]:
        matching: dict[int, list[UpdateNode]] = {}
        for idx, elem in enumerate(array):
            for ident in sorted(self.children):
                if ident == "" or ctx.filters[ident](elem):
                    matching.setdefault(idx, []).append(self.children[ident])
        return matching

    @staticmethod
    def _log(log: V2LogBuilder, ctx: ApplyContext, array: list, modified: list[int]) -> None:
        if len(modified) > 1:
            log.updated(ctx.taken_parts(), ctx.taken_types(), array)
        else:
            idx = modified[0]
            log.updated(ctx.taken_parts() + [str(idx)], ctx.taken_types() + [INDEX],
                        array[idx])


def merge_nodes(left: UpdateNode | None, right: UpdateNode | None, path: str) -> UpdateNode:
    """UpdateNode::createUpdateNodeByMerging: internal nodes merge, leaves conflict."""
    if left is None:
        return right  # type: ignore[return-value]
    if right is None:
        return left
    if left.kind != right.kind or left.kind == "leaf":
        raise CommandError(CONFLICTING_UPDATE_OPERATORS,
                           f"Update created a conflict at '{path}'")
    merged: Any = ObjectNode() if left.kind == "object" else ArrayNode()
    for name in dict.fromkeys(list(left.children) + list(right.children)):  # type: ignore[attr-defined]
        merged.children[name] = merge_nodes(left.children.get(name),  # type: ignore[attr-defined]
                                            right.children.get(name),  # type: ignore[attr-defined]
                                            f"{path}.{name}")
    if left.kind == "object":
        merged.positional = merge_nodes(left.positional, right.positional,  # type: ignore[attr-defined]
                                        f"{path}.$") if (left.positional or right.positional) \
            else None  # type: ignore[attr-defined]
    return merged


# ----------------------------------------------------------------- parsing

_IDENT = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def is_array_filter_part(part: str) -> bool:
    return len(part) >= 3 and part.startswith("$[") and part.endswith("]")


def check_updatable(path: str) -> list[str]:
    """fieldchecker::isUpdatable plus the positional rules of parseAndMerge."""
    if path == "":
        raise CommandError(EMPTY_FIELD_NAME, "An empty update path is not valid.")
    parts = path.split(".")
    if any(p == "" for p in parts):
        raise CommandError(EMPTY_FIELD_NAME, f"The update path '{path}' contains an empty "
                           "field name, which is not allowed.")
    positions = [i for i, p in enumerate(parts) if p == "$"]
    if len(positions) > 1:
        raise CommandError(BAD_VALUE, "Too many positional (i.e. '$') elements found in "
                           f"path '{path}'")
    if positions and positions[0] == 0:
        raise CommandError(BAD_VALUE, "Cannot have positional (i.e. '$') element in the "
                           f"first position in path '{path}'")
    return parts


def _node_name(part: str, pos: int, path: str, filters: Mapping, found: set[str]) -> str:
    if not is_array_filter_part(part):
        return part
    if pos == 0:
        raise CommandError(BAD_VALUE, "Cannot have array filter identifier (i.e. '$[<id>]') "
                           f"element in the first position in path '{path}'")
    ident = part[2:-1]
    if ident and ident not in filters:
        raise CommandError(BAD_VALUE, f"No array filter found for identifier '{ident}' in "
                           f"path '{path}'")
    if ident:
        found.add(ident)
    return ident


def merge_path(root: ObjectNode, path: str, leaf: UpdateNode, filters: Mapping,
               found: set[str]) -> bool:
    """UpdateObjectNode::parseAndMerge for one path; returns whether it is positional."""
    parts = check_updatable(path)
    current: Any = root
    for i, part in enumerate(parts[:-1]):
        name = _node_name(part, i, path, filters, found)
        want_array = is_array_filter_part(parts[i + 1])
        child = current.get(name)
        if child is None:
            child = ArrayNode() if want_array else ObjectNode()
            current.set(name, child)
        elif child.kind != ("array" if want_array else "object"):
            raise CommandError(CONFLICTING_UPDATE_OPERATORS,
                               f"Updating the path '{path}' would create a conflict at "
                               f"'{'.'.join(parts[:i + 1])}'")
        current = child
    name = _node_name(parts[-1], len(parts) - 1, path, filters, found)
    if current.get(name) is not None:
        raise CommandError(CONFLICTING_UPDATE_OPERATORS,
                           f"Updating the path '{path}' would create a conflict at '{path}'")
    current.set(name, leaf)
    return "$" in parts


def parse_array_filters(array_filters: list | None) -> dict[str, Callable[[Any], bool]]:
    """Array filters by identifier (ParsedUpdate::parseArrayFilters)."""
    from backupflows.sandbox.query_match import compile_filter
    out: dict[str, Callable[[Any], bool]] = {}
    for spec in array_filters or []:
        if not is_doc(spec):
            raise CommandError(FAILED_TO_PARSE, "arrayFilters entries must be objects")
        ident = _placeholder(spec)
        if ident in out:
            raise CommandError(FAILED_TO_PARSE, "Found multiple array filters with the same "
                               f"top-level field name {ident}")
        matcher = compile_filter(spec)
        out[ident] = (lambda m, name: lambda elem: m({name: elem}, [None]))(matcher, ident)
    return out


def _placeholder(spec: Mapping) -> str:
    names: list[str] = []
    _collect_names(spec, names)
    if not names:
        raise CommandError(FAILED_TO_PARSE, "Cannot use an expression without a top-level "
                           "field name in arrayFilters")
    distinct = list(dict.fromkeys(names))
    if len(distinct) > 1:
        raise CommandError(FAILED_TO_PARSE, "Error parsing array filter :: caused by :: "
                           "Expected a single top-level field name, found "
                           f"'{distinct[0]}' and '{distinct[1]}'")
    if not _IDENT.match(distinct[0]):
        raise CommandError(BAD_VALUE, "Error parsing array filter :: caused by :: The "
                           "top-level field name must be an alphanumeric string beginning "
                           f"with a lowercase letter, found '{distinct[0]}'")
    return distinct[0]


def _collect_names(spec: Mapping, names: list[str]) -> None:
    for key, value in spec.items():
        if key in ("$and", "$or", "$nor") and isinstance(value, list):
            for sub in value:
                if is_doc(sub):
                    _collect_names(sub, names)
        elif not key.startswith("$"):
            names.append(key.split(".")[0])

