"""Projections (find's projection, $project, $unset) and $addFields/$set.

Rules (src/mongo/db/exec/projection_executor*, src/mongo/db/exec/add_fields_*):
- a projection is either an inclusion (fields set to 1/true, computed fields)
  or an exclusion (fields set to 0/false); mixing them is an error, except
  for _id, which is included unless excluded explicitly;
- inclusion output keeps the input document's field order, then appends the
  computed fields in the order of the specification; exclusion keeps the
  input order minus the excluded fields;
- dotted paths and nested specifications descend into sub-documents and,
  through arrays, into every array element (scalars in an array are dropped
  by an inclusion);
- $slice (n or [skip, limit]) and $elemMatch are applied to array fields;
- $addFields evaluates every expression against the input document, replaces
  existing fields in place and appends new ones in specification order; a
  nested object without operators is a nested specification.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backupflows.sandbox.errors import BAD_VALUE, CommandError
from backupflows.sandbox.query_expr import compile_expression
from backupflows.sandbox.query_values import MISSING, copy_value, is_doc, is_number

INCLUDE, EXCLUDE = "include", "exclude"


class _Spec:
    """A parsed projection: a tree of field name -> action or sub-tree."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.mode: str | None = None


def _leaf_kind(value: Any) -> tuple[str, Any]:
    if isinstance(value, bool) or is_number(value):
        return (INCLUDE if value else EXCLUDE), None
    if is_doc(value) and value:
        op = next(iter(value))
        if op == "$slice":
            return "slice", _parse_slice(value[op])
        if op == "$elemMatch":
            from backupflows.sandbox.query_match import compile_filter
            if not is_doc(value[op]):
                raise CommandError(BAD_VALUE, "elemMatch: Invalid argument, object required.")
            return "elemMatch", compile_filter({"v": {"$elemMatch": value[op]}})
        if op == "$meta":
            raise CommandError(BAD_VALUE, "$meta projections are not supported by the sandbox")
    return "expr", compile_expression(value)


def _parse_slice(arg: Any) -> tuple[int, int | None]:
    if is_number(arg):
        return int(float(str(arg))), None
    if isinstance(arg, list) and len(arg) == 2 and all(is_number(x) for x in arg):
        skip, limit = (int(float(str(x))) for x in arg)
        if limit <= 0:
            raise CommandError(28724, "Second argument to $slice must be a positive number")
        return skip, limit
    raise CommandError(28667, "$slice only supports numbers and [skip, limit] arrays")


def parse_projection(projection: Mapping) -> _Spec:
    spec = _Spec()
    for path, value in projection.items():
        if path.endswith(".$") or path == "$" or ".$." in path:
            raise CommandError(BAD_VALUE, "positional projection is not supported by the "
                               "sandbox")
        _add(spec, spec.fields, path.split("."), value, path)
    if spec.mode is None:
        # Only _id (and $slice/$elemMatch): {_id: 1} is an inclusion projection.
        id_node = spec.fields.get("_id")
        spec.mode = INCLUDE if id_node == (INCLUDE, None) else EXCLUDE
    return spec


def _add(spec: _Spec, tree: dict, parts: list[str], value: Any, path: str) -> None:
    head, rest = parts[0], parts[1:]
    if rest:
        sub = tree.setdefault(head, {})
        if not isinstance(sub, dict):
            raise CommandError(31250, f"Path collision at {path}")
        _add(spec, sub, rest, value, path)
        return
    if is_doc(value) and value and not next(iter(value)).startswith("$"):
        sub = tree.setdefault(head, {})
        for name, inner in value.items():
            _add(spec, sub, name.split("."), inner, f"{path}.{name}")
        return
    if head in tree:
        raise CommandError(31250, f"Path collision at {path}")
    kind, arg = _leaf_kind(value)
    tree[head] = (kind, arg)
    _set_mode(spec, kind, path)


def _set_mode(spec: _Spec, kind: str, path: str) -> None:
    if path == "_id" and kind in (INCLUDE, EXCLUDE):
        return
    if kind in ("slice", "elemMatch"):
        return
    mode = EXCLUDE if kind == EXCLUDE else INCLUDE
    if spec.mode is not None and spec.mode != mode:
        if mode == EXCLUDE:
            raise CommandError(31254, f"Cannot do exclusion on field {path} in inclusion "
                               "projection")
        raise CommandError(31253, f"Cannot do inclusion on field {path} in exclusion "
                           "projection")
    spec.mode = mode


def project(doc: Mapping, projection: Mapping | None) -> dict:
    """Apply a find-style projection (or $project specification) to ``doc``."""
    if not projection:
        return copy_value(doc)
    spec = parse_projection(projection)
    if spec.mode == INCLUDE:
        fields = dict(spec.fields)
        fields.setdefault("_id", (INCLUDE, None))
        return _include(doc, fields, doc)
    return _exclude(doc, spec.fields, doc)


def _include(doc: Mapping, tree: dict, root: Mapping) -> dict:
    out: dict = {}
    for name, value in doc.items():
        node = tree.get(name)
        if node is None:
            continue
        if isinstance(node, dict):
            sub = _include_value(value, node, root)
            if sub is not MISSING:
                out[name] = sub
        elif node[0] == INCLUDE:
            out[name] = copy_value(value)
        elif node[0] in ("slice", "elemMatch"):
            result = _array_op(node, value)
            if result is not MISSING:
                out[name] = result
    for name, node in tree.items():
        if isinstance(node, tuple) and node[0] == "expr":
            result = node[1](root)
            if result is not MISSING:
                out[name] = result
        elif isinstance(node, dict) and _has_expr(node) and name not in out:
            out[name] = _include({}, node, root)
    return out


def _has_expr(tree: dict) -> bool:
    return any(isinstance(n, dict) and _has_expr(n) or isinstance(n, tuple) and n[0] == "expr"
               for n in tree.values())


def _include_value(value: Any, tree: dict, root: Mapping) -> Any:
    if is_doc(value):
        return _include(value, tree, root)
    if isinstance(value, list):
        return [_include_value(v, tree, root) for v in value
                if is_doc(v) or isinstance(v, list)]
    return _include({}, tree, root) if _has_expr(tree) else MISSING


def _exclude(doc: Mapping, tree: dict, root: Mapping) -> dict:
    out: dict = {}
    for name, value in doc.items():
        node = tree.get(name)
        if node is None:
            out[name] = copy_value(value)
        elif isinstance(node, dict):
            out[name] = _exclude_value(value, node, root)
        elif node[0] in ("slice", "elemMatch"):
            result = _array_op(node, value)
            if result is not MISSING:
                out[name] = result
        elif node[0] == INCLUDE:
            out[name] = copy_value(value)
    return out


def _exclude_value(value: Any, tree: dict, root: Mapping) -> Any:
    if is_doc(value):
        return _exclude(value, tree, root)
    if isinstance(value, list):
        return [_exclude_value(v, tree, root) for v in value]
    return copy_value(value)


def _array_op(node: tuple, value: Any) -> Any:
    kind, arg = node
    if not isinstance(value, list):
        return MISSING if kind == "elemMatch" else copy_value(value)
    if kind == "slice":
        return copy_value(_slice(value, *arg))
    for elem in value:
        if arg({"v": [elem]}, [None]):
            return [copy_value(elem)]
    return MISSING


def _slice(value: list, skip: int, limit: int | None) -> list:
    if limit is None:
        return value[:skip] if skip >= 0 else value[skip:]
    start = skip if skip >= 0 else max(len(value) + skip, 0)
    return value[start:start + limit]


# ----------------------------------------------------------------- $addFields

def add_fields(doc: Mapping, spec: Mapping) -> dict:
    """The $addFields / $set stage applied to one document."""
    assignments: list[tuple[list[str], Any]] = []
    _flatten(spec, [], assignments)
    values = [(parts, fn(doc)) for parts, fn in assignments]
    out = copy_value(doc)
    for parts, value in values:
        _set_path(out, parts, value)
    return out


def _flatten(spec: Mapping, prefix: list[str], out: list) -> None:
    for name, value in spec.items():
        parts = prefix + name.split(".")
        if is_doc(value) and value and not next(iter(value)).startswith("$"):
            _flatten(value, parts, out)
        else:
            out.append((parts, compile_expression(value)))


def _set_path(doc: dict, parts: list[str], value: Any) -> None:
    head, rest = parts[0], parts[1:]
    if not rest:
        if value is MISSING:
            doc.pop(head, None)
        else:
            doc[head] = copy_value(value)
        return
    current = doc.get(head, MISSING)
    if isinstance(current, list):
        doc[head] = [_set_in_element(e, rest, value) for e in current]
    elif is_doc(current):
        _set_path(current, rest, value)
    elif value is not MISSING:
        fresh: dict = {}
        _set_path(fresh, rest, value)
        doc[head] = fresh


def _set_in_element(elem: Any, parts: list[str], value: Any) -> Any:
    if isinstance(elem, list):
        return [_set_in_element(e, parts, value) for e in elem]
    target = elem if is_doc(elem) else {}
    _set_path(target, parts, value)
    return target
