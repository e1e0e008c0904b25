"""Array update operators: $push, $addToSet, $pop, $pull, $pullAll.

Server files (src/mongo/db/update/): push_node.cpp, addtoset_node.cpp,
pop_node.cpp, pull_node.cpp, pullall_node.cpp, array_culling_node.cpp and
pattern_cmp.cpp; the logging rules are summarised in update_modifiers.py.
$push's $sort is a stable sort here; the server's std::sort is only stable for
arrays of up to 16 elements, so elements that compare equal under the sort
pattern may come out in another order on a real server for longer arrays.
"""

from __future__ import annotations

import functools
from typing import Any

from bson.decimal128 import Decimal128
from bson.regex import Regex

from backupflows.sandbox.errors import BAD_VALUE, FAILED_TO_PARSE, TYPE_MISMATCH, CommandError
from backupflows.sandbox.query_values import (
    compare,
    copy_value,
    is_doc,
    is_number,
    parse_index,
    render,
    type_name,
    value_key,
)
from backupflows.sandbox.update_log import INDEX, V2LogBuilder
from backupflows.sandbox.update_modifiers import (
    APPEND,
    NOOP,
    NORMAL,
    ModifierNode,
    root_id,
)
from backupflows.sandbox.update_tree import ApplyContext, Ref

# ----------------------------------------------------------------- array culling

def _parse_long(path: str, value: Any) -> int:
    if not is_number(value):
        raise CommandError(FAILED_TO_PARSE, f"Expected a number in: {path}: {render(value)}")
    number = float(str(value)) if isinstance(value, Decimal128) else float(value)
    if number != int(number):
        raise CommandError(FAILED_TO_PARSE, f"Expected an integer: {path}: {render(value)}")
    return int(number)


class PopNode(ModifierNode):
    def __init__(self, path: str, value: Any) -> None:
        number = _parse_long(path, value)
        if number not in (1, -1):
            raise CommandError(FAILED_TO_PARSE, f"$pop expects 1 or -1, found: {number}")
        self.front = number == -1

    def update_existing(self, ref: Ref, ctx: ApplyContext) -> str:
        array = ref.value
        if not isinstance(array, list):
            raise CommandError(TYPE_MISMATCH, f"Path '{ctx.dotted()}' contains an element of "
                               f"non-array type '{type_name(array)}'")
        if not array:
            return NOOP
        array.pop(0 if self.front else -1)
        return NORMAL


class CullingNode(ModifierNode):
    """ArrayCullingNode: $pull and $pullAll remove the elements a matcher accepts."""

    def __init__(self, matcher: Any) -> None:
        self.matcher = matcher

    def update_existing(self, ref: Ref, ctx: ApplyContext) -> str:
        array = ref.value
        if not isinstance(array, list):
            raise CommandError(BAD_VALUE, "Cannot apply $pull to a non-array value")
        kept = [e for e in array if not self.matcher(e)]
        if len(kept) == len(array):
            return NOOP
        array[:] = kept
        return NORMAL


def pull_matcher(value: Any) -> Any:
    """PullNode::init: object matcher, wrapped operator matcher, or equality."""
    from backupflows.sandbox.query_match import PATH_ACCEPTING_OPERATORS, compile_filter
    first = next(iter(value), "") if is_doc(value) else ""
    if is_doc(value) and first not in PATH_ACCEPTING_OPERATORS:
        query = compile_filter(value)
        return lambda elem: is_doc(elem) and query(elem, [None])
    if is_doc(value) or isinstance(value, Regex) or hasattr(value, "pattern"):
        wrapped = compile_filter({"": value})
        return lambda elem: wrapped({"": elem}, [None])
    key = value_key(value)
    return lambda elem: value_key(elem) == key


def pull_all_matcher(value: Any) -> Any:
    if not isinstance(value, list):
        raise CommandError(BAD_VALUE, "$pullAll requires an array argument but was given a "
                           f"{type_name(value)}")
    keys = {value_key(v) for v in value}
    return lambda elem: value_key(elem) in keys


# ----------------------------------------------------------------- $addToSet

class AddToSetNode(ModifierNode):
    allow_creation = True

    def __init__(self, value: Any) -> None:
        elements = [value]
        if is_doc(value) and value and next(iter(value)) == "$each":
            each = value["$each"]
            if not isinstance(each, list):
                raise CommandError(TYPE_MISMATCH, "The argument to $each in $addToSet must be "
                                   f"an array but it was of type {type_name(each)}")
            if len(value) > 1:
                raise CommandError(BAD_VALUE, "Found unexpected fields after $each in "
                                   f"$addToSet: {render(value)}")
            elements = each
        self.elements = _dedupe(elements)

    def update_existing(self, ref: Ref, ctx: ApplyContext) -> str:
        array = ref.value
        if not isinstance(array, list):
            raise CommandError(BAD_VALUE, "Cannot apply $addToSet to non-array field. Field "
                               f"named '{ref.name}' has non-array type {type_name(array)}")
        present = {value_key(e) for e in array}
        added = [e for e in self.elements if value_key(e) not in present]
        if not added:
            return NOOP
        array.extend(copy_value(added))
        return NORMAL

    def value_for_new(self, ctx: ApplyContext) -> Any:
        return copy_value(self.elements)


def _dedupe(values: list) -> list:
    seen: set[bytes] = set()
    out = []
    for value in values:
        key = value_key(value)
        if key not in seen:
            seen.add(key)
            out.append(copy_value(value))
    return out


# ----------------------------------------------------------------- $push

class PushNode(ModifierNode):
    allow_creation = True

    def __init__(self, value: Any) -> None:
        self.values: list = [copy_value(value)]
        self.slice: int | None = None
        self.sort: Any = None
        self.position: int | None = None
        if is_doc(value) and "$each" in value:
            self._parse_clauses(value)

    def _parse_clauses(self, spec: dict) -> None:
        for name in spec:
            if name not in ("$each", "$slice", "$sort", "$position"):
                raise CommandError(BAD_VALUE, f"Unrecognized clause in $push: {name}")
        each = spec["$each"]
        if not isinstance(each, list):
            raise CommandError(BAD_VALUE, "The argument to $each in $push must be an array "
                               f"but it was of type: {type_name(each)}")
        self.values = copy_value(each)
        if "$slice" in spec:
            self.slice = _integer_clause(spec["$slice"], "The value for $slice must be an "
                                         "integer value but was given type: ")
        if "$sort" in spec:
            self.sort = _parse_sort(spec["$sort"])
        if "$position" in spec:
            self.position = _integer_clause(spec["$position"], "The value for $position "
                                            "must be an integer value, not of type: ")

    def _push(self, array: list) -> str:
        result = self._insert(array)
        if self.sort is not None:
            result = NORMAL
            array.sort(key=functools.cmp_to_key(self.sort))
        if self.slice is not None and len(array) > abs(self.slice):
            result = NORMAL
            if self.slice >= 0:
                del array[self.slice:]
            else:
                del array[:len(array) - abs(self.slice)]
        return result

    def _insert(self, array: list) -> str:
        if not self.values:
            return NOOP
        size = len(array)
        values = copy_value(self.values)
        pos = self.position
        if size == 0:
            array.extend(values)
            return NORMAL
        if pos is None or pos > size:
            array.extend(values)
            return APPEND
        if pos > 0:
            array[pos:pos] = values
        elif pos < 0 and abs(pos) < size:
            at = size - abs(pos)
            array[at:at] = values
        else:
            array[0:0] = values
        return NORMAL

    def update_existing(self, ref: Ref, ctx: ApplyContext) -> str:
        array = ref.value
        if not isinstance(array, list):
            raise CommandError(BAD_VALUE, f"The field '{ctx.dotted()}' must be an array but "
                               f"is of type {type_name(array)} in document "
                               f"{{{root_id(ctx)}}}")
        return self._push(array)

    def value_for_new(self, ctx: ApplyContext) -> Any:
        array: list = []
        self._push(array)
        return array

    def log_update(self, log: V2LogBuilder, ctx: ApplyContext, ref: Ref, result: str) -> None:
        if result != APPEND:
            super().log_update(log, ctx, ref, result)
            return
        array = ref.value
        start = len(array) - len(self.values)
        for offset, value in enumerate(self.values):
            parts = ctx.taken_parts() + [str(start + offset)]
            types = ctx.taken_types() + [INDEX]
            log.created(parts, types, len(parts) - 1, value)


def _integer_clause(value: Any, message: str) -> int:
    if not is_number(value):
        raise CommandError(BAD_VALUE, message + type_name(value))
    number = float(str(value)) if isinstance(value, Decimal128) else float(value)
    if number != int(number):
        raise CommandError(BAD_VALUE, message + type_name(value))
    return int(number)


def _parse_sort(spec: Any) -> Any:
    """The comparison function of PatternElementCmp (pattern_cmp.cpp)."""
    if is_number(spec):
        direction = float(str(spec))
        if direction not in (1.0, -1.0):
            raise CommandError(BAD_VALUE, "The $sort element value must be either 1 or -1")
        sign = 1 if direction > 0 else -1
        return lambda a, b: sign * compare(a, b)
    if not is_doc(spec):
        raise CommandError(BAD_VALUE, "The $sort is invalid: use 1/-1 to sort the whole "
                           "element, or {field:1/-1} to sort embedded fields")
    if not spec:
        raise CommandError(BAD_VALUE, "The sort pattern is empty when it should be a set of "
                           "fields.")
    pattern = []
    for path, direction in spec.items():
        if not is_number(direction) or float(str(direction)) not in (1.0, -1.0):
            raise CommandError(BAD_VALUE, "The $sort element value must be either 1 or -1")
        if any(p == "" for p in path.split(".")):
            raise CommandError(BAD_VALUE, "The $sort field is a dotted field but has an "
                               f"empty part: {path}")
        pattern.append((path.split("."), 1 if float(str(direction)) > 0 else -1))

    def cmp(a: Any, b: Any) -> int:
        for parts, sign in pattern:
            result = compare(_extract(a, parts), _extract(b, parts))
            if result:
                return sign * result
        return 0
    return cmp


def _extract(value: Any, parts: list[str]) -> Any:
    current = value if is_doc(value) else {"": value}
    for part in parts:
        if is_doc(current) and part in current:
            current = current[part]
        elif isinstance(current, list) and parse_index(part) is not None and \
                parse_index(part) < len(current):  # type: ignore[operator]
            current = current[parse_index(part)]  # type: ignore[index]
        else:
            return None
    return current


