"""$rename (src/mongo/db/update/rename_node.cpp).

The RenameNode sits at the destination path of the update tree (a
ConflictPlaceholderNode holds the source path); applying it finds the source
from the document root, sets the destination (always logged, u or i) and then
removes the source (logged d).  Renaming through an array element is BadValue,
a source path through a scalar is PathNotViable, a missing source a no-op.
"""

from __future__ import annotations

from typing import Any

from backupflows.sandbox.errors import BAD_VALUE, IMMUTABLE_FIELD, PATH_NOT_VIABLE, CommandError
from backupflows.sandbox.query_values import copy_value, is_doc, parse_index, render_element
from backupflows.sandbox.update_log import FIELD, INDEX
from backupflows.sandbox.update_modifiers import NORMAL, ModifierNode, root_id
from backupflows.sandbox.update_tree import ApplyContext, Ref, UpdateNode

# ----------------------------------------------------------------- $rename

class SetElementNode(ModifierNode):
    """The $set half of a $rename: always a change, even to an equal value."""

    allow_creation = True
    can_set_object_value = True

    def __init__(self, value: Any) -> None:
        self.val = value

    def update_existing(self, ref: Ref, ctx: ApplyContext) -> str:
        ref.value = copy_value(self.val)
        return NORMAL

    def value_for_new(self, ctx: ApplyContext) -> Any:
        return copy_value(self.val)


class RenameNode(UpdateNode):
    """Placed at the destination path; finds the source from the document root."""

    def __init__(self, source: str, dest: str) -> None:
        self.source, self.dest = source, dest
        src, dst = source.split("."), dest.split(".")
        if src == dst:
            raise CommandError(BAD_VALUE, "The source and target field for $rename must "
                               f"differ: {source}: \"{dest}\"")
        shortest = min(len(src), len(dst))
        if src[:shortest] == dst[:shortest]:
            raise CommandError(BAD_VALUE, "The source and target field for $rename must not "
                               f"be on the same path: {source}: \"{dest}\"")
        if any(p == "$" or p.startswith("$[") for p in src):
            raise CommandError(BAD_VALUE, "The source field for $rename may not be dynamic: "
                               f"{source}")
        if any(p == "$" or p.startswith("$[") for p in dst):
            raise CommandError(BAD_VALUE, "The destination field for $rename may not be "
                               f"dynamic: {dest}")
        if "\0" in dest:
            raise CommandError(BAD_VALUE, "The 'to' field for $rename cannot contain an "
                               "embedded null byte")

    def apply(self, ref: Ref, ctx: ApplyContext) -> bool:
        parts = self.source.split(".")
        found = _find_source(ctx.doc, parts, self.source)  # type: ignore[attr-defined]
        if found is None:
            return True
        parent, key, chain = found
        _check_no_arrays(chain, self.source, "source", ctx)
        dest_chain = [t for _, t in ctx.taken]
        if INDEX in dest_chain or (ctx.create and ref.is_array()):
            name = _dest_array_name(ctx, ref)
            raise CommandError(BAD_VALUE, "The destination field cannot be an array element, "
                               f"'{self.dest}' in doc with {root_id(ctx)} has an array "
                               f"field called '{name}'")
        SetElementNode(copy_value(parent[key])).apply(ref, ctx)
        if parts[0] == "_id":
            raise CommandError(IMMUTABLE_FIELD, f"Performing an update on the path "
                               f"'{self.source}' would modify the immutable field '_id'")
        del parent[key]
        if ctx.log is not None:
            ctx.log.deleted(parts, [FIELD] * len(parts))
        return False


def _find_source(doc: dict, parts: list[str], path: str) -> tuple[Any, Any, list] | None:
    """pathsupport::findLongestPrefix for the $rename source."""
    current: Any = doc
    chain: list[tuple[str, Any]] = []
    for i, part in enumerate(parts):
        if is_doc(current):
            if part not in current:
                return None
            parent, key = current, part
        elif isinstance(current, list):
            idx = parse_index(part)
            if idx is None:
                _not_viable(parts, i, chain)
            if idx >= len(current):  # type: ignore[operator]
                return None
            parent, key = current, idx
        else:
            _not_viable(parts, i, chain)
        chain.append((part, parent))
        current = parent[key]
    return parent, key, chain


def _not_viable(parts: list[str], i: int, chain: list) -> None:
    name, parent = chain[-1]
    key = parse_index(name) if isinstance(parent, list) else name
    element = render_element(name, parent[key])
    raise CommandError(PATH_NOT_VIABLE, f"cannot use the part ({parts[i - 1]} of "
                       f"{'.'.join(parts)}) to traverse the element ({{{element}}})")


def _check_no_arrays(chain: list, path: str, side: str, ctx: ApplyContext) -> None:
    for i, (_part, parent) in enumerate(chain[1:], start=1):
        if isinstance(parent, list):
            raise CommandError(BAD_VALUE, f"The {side} field cannot be an array element, "
                               f"'{path}' in doc with {root_id(ctx)} has an array field "
                               f"called '{chain[i - 1][0]}'")


def _dest_array_name(ctx: ApplyContext, ref: Ref) -> str:
    parts = ctx.taken_parts()
    for i, (_, kind) in enumerate(ctx.taken):
        if kind == INDEX:
            return parts[i - 1]
    return ref.name
