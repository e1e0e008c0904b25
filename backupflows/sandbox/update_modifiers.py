"""Leaf nodes of the update tree: one class per update operator.

Each follows its server file in src/mongo/db/update/ (ModifierNode in
modifier_node.cpp provides apply(): update the existing element, or create the
missing path, or check viability; then check _id and log):
- $set/$setOnInsert (set_node.cpp): no-op when the new value is binary-equal
  (same BSON type and bytes) to the old one; $setOnInsert only on upsert inserts;
- $unset (unset_node.cpp): removes the field (logged d); on an array element it
  sets null (logged u); missing paths are a no-op, even non-viable ones;
- $inc/$mul (arithmetic_node.cpp, safe_num.cpp): int32 widens to int64, int64
  overflow is BadValue, doubles and decimals as the server computes them;
  no-op when the result is identical (same type and value) to the old value;
- $min/$max (compare_node.cpp): server order, no-op unless strictly better;
- $push (push_node.cpp): appending to a non-empty array without $position,
  $sort or a trimming $slice logs each new element as u<idx> of an array diff;
  anything else (empty array, $position inside, $sort, trimming $slice) logs
  the whole array; $sort always counts as a change;
- $addToSet (addtoset_node.cpp, 7.0): logs the whole array (the append-only
  diff for $addToSet only exists in later servers);
- $pop/$pull/$pullAll (pop_node.cpp, pull_node.cpp, pullall_node.cpp,
  array_culling_node.cpp): whole array logged; missing paths are a no-op but a
  path through a scalar is PathNotViable;
- $rename (rename_node.cpp): a set of the destination (logged first, u or i)
  then an unset of the source (logged d);
- $currentDate (current_date_node.cpp): always a change.
"""

from __future__ import annotations

import datetime
import itertools
import time
from decimal import Context
from typing import Any

from bson.decimal128 import Decimal128, create_decimal128_context
from bson.int64 import Int64
from bson.timestamp import Timestamp

from backupflows.sandbox.errors import (
    BAD_VALUE,
    IMMUTABLE_FIELD,
    PATH_NOT_VIABLE,
    TYPE_MISMATCH,
    CommandError,
)
from backupflows.sandbox.query_values import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    binary_equal,
    bson_type,
    compare,
    copy_value,
    is_doc,
    is_number,
    parse_index,
    render_element,
    type_name,
)
from backupflows.sandbox.update_log import FIELD, INDEX, V2LogBuilder
from backupflows.sandbox.update_tree import ApplyContext, Ref, UpdateNode

NOOP, NORMAL, APPEND = "noop", "normal", "append"
_DEC_CTX = create_decimal128_context()
_ROUND15 = Context(prec=15)


def root_id(ctx: ApplyContext) -> str:
    doc = getattr(ctx, "doc", None)
    if is_doc(doc) and "_id" in doc:
        return render_element("_id", doc["_id"])
    return "no id"


class ModifierNode(UpdateNode):
    """ModifierNode::apply(): the policy shared by every update operator."""

    insert_only = False
    allow_creation = False
    allow_non_viable = False
    can_set_object_value = False

    def apply(self, ref: Ref, ctx: ApplyContext) -> bool:
        if self.insert_only and not ctx.insert:
            return True
        if ctx.create:
            return self._apply_nonexistent(ref, ctx)
        return self._apply_existing(ref, ctx)

    def update_existing(self, ref: Ref, ctx: ApplyContext) -> str:
        raise NotImplementedError

    def value_for_new(self, ctx: ApplyContext) -> Any:
        raise NotImplementedError

    def _apply_existing(self, ref: Ref, ctx: ApplyContext) -> str | bool:
        result = self.update_existing(ref, ctx)
        if result == NOOP:
            return True
        if ctx.taken and ctx.taken[0][0] == "_id":
            _immutable_error(ctx, ref, self.can_set_object_value)
        if ctx.log is not None:
            self.log_update(ctx.log, ctx, ref, result)
        return False

    def _apply_nonexistent(self, ref: Ref, ctx: ApplyContext) -> bool:
        if not self.allow_creation:
            if not self.allow_non_viable:
                check_viability(ref, ctx)
            return True
        value = self.value_for_new(ctx)
        create_path_at(ref, ctx.create, value)
        if ctx.taken and ctx.taken[0][0] == "_id":
            raise CommandError(IMMUTABLE_FIELD, f"Updating the path '{ctx.dotted()}' to "
                               f"{ref.describe()} would modify the immutable field '_id'")
        if ctx.log is not None:
            parts = ctx.taken_parts() + list(ctx.create)
            types = ctx.taken_types() + [INDEX if ref.is_array() else FIELD]
            types += [FIELD] * (len(ctx.create) - 1)
            ctx.log.created(parts, types, len(ctx.taken), value)
        return False

    def log_update(self, log: V2LogBuilder, ctx: ApplyContext, ref: Ref, result: str) -> None:
        log.updated(ctx.taken_parts(), ctx.taken_types(), ref.value)


def _immutable_error(ctx: ApplyContext, ref: Ref, object_value: bool) -> None:
    path = ctx.dotted()
    if object_value and len(ctx.taken) == 1:
        raise CommandError(IMMUTABLE_FIELD, f"Updating the path '{path}' to "
                           f"{ref.describe()} would modify the immutable field '_id'")
    raise CommandError(IMMUTABLE_FIELD, f"Performing an update on the path '{path}' would "
                       "modify the immutable field '_id'")


def check_viability(ref: Ref, ctx: ApplyContext) -> None:
    """UpdateLeafNode::checkViability."""
    value = ref.value
    first = ctx.create[0]
    if is_doc(value) or (isinstance(value, list) and parse_index(first) is not None):
        return
    full = ".".join(ctx.taken_parts() + list(ctx.create))
    raise CommandError(PATH_NOT_VIABLE, f"Cannot use the part ({first}) of ({full}) to "
                       f"traverse the element ({{{ref.describe()}}})")


def create_path_at(ref: Ref, parts: list[str], value: Any) -> None:
    """pathsupport::createPathAt: create ``parts`` under ``ref`` holding ``value``."""
    container = ref.value
    leaf: Any = value
    for part in reversed(parts[1:]):
        leaf = {part: leaf}
    if isinstance(container, list):
        idx = parse_index(parts[0])
        if idx is None:
            raise CommandError(PATH_NOT_VIABLE, f"Cannot create field '{parts[0]}' in "
                               f"element {{{ref.describe()}}}")
        if idx - len(container) > 1500000:
            raise CommandError(BAD_VALUE, "can't backfill more than 1500000 elements")
        container.extend([None] * (idx - len(container)))
        container.append(leaf)
    elif is_doc(container):
        container[parts[0]] = leaf
    else:
        raise CommandError(PATH_NOT_VIABLE, f"Cannot create field '{parts[0]}' in element "
                           f"{{{ref.describe()}}}")


# ----------------------------------------------------------------- $set, $unset

class SetNode(ModifierNode):
    allow_creation = True
    can_set_object_value = True

    def __init__(self, value: Any, insert_only: bool = False) -> None:
        self.val = copy_value(value)
        self.insert_only = insert_only

    def update_existing(self, ref: Ref, ctx: ApplyContext) -> str:
        if binary_equal(ref.value, self.val):
            return NOOP
        ref.value = copy_value(self.val)
        return NORMAL

    def value_for_new(self, ctx: ApplyContext) -> Any:
        return copy_value(self.val)


class UnsetNode(ModifierNode):
    allow_non_viable = True

    def update_existing(self, ref: Ref, ctx: ApplyContext) -> str:
        if isinstance(ref.parent, list):
            ref.value = None
        else:
            del ref.parent[ref.key]
        return NORMAL

    def log_update(self, log: V2LogBuilder, ctx: ApplyContext, ref: Ref, result: str) -> None:
        if ctx.taken[-1][1] == INDEX:
            log.updated(ctx.taken_parts(), ctx.taken_types(), None)
        else:
            log.deleted(ctx.taken_parts(), ctx.taken_types())


class ConflictPlaceholderNode(UpdateNode):
    """Holds the source path of a $rename in the tree; does nothing itself."""

    def apply(self, ref: Ref, ctx: ApplyContext) -> bool:
        return True


# ----------------------------------------------------------------- $inc, $mul

def _num_kind(value: Any) -> int:
    return bson_type(value)


def _as_decimal(value: Any) -> Any:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    if isinstance(value, float):
        return _ROUND15.create_decimal_from_float(value)
    return _DEC_CTX.create_decimal(int(value))


def safe_arith(op: str, left: Any, right: Any) -> Any:
    """SafeNum addition/multiplication; None when the result is invalid (int64
    overflow)."""
    kinds = {_num_kind(left), _num_kind(right)}
    fn = (lambda a, b: a + b) if op == "$inc" else (lambda a, b: a * b)
    if kinds <= {16, 18}:
        result = fn(int(left), int(right))
        if kinds == {16} and INT32_MIN <= result <= INT32_MAX:
            return int(result)
        if INT64_MIN <= result <= INT64_MAX:
            return Int64(result)
        return None
    if 19 in kinds:
        a, b = _as_decimal(left), _as_decimal(right)
        result = _DEC_CTX.add(a, b) if op == "$inc" else _DEC_CTX.multiply(a, b)
        return Decimal128(result)
    return float(fn(float(left), float(right)))


def identical(a: Any, b: Any) -> bool:
    """SafeNum::isIdentical: same numeric type and equal value."""
    if _num_kind(a) != _num_kind(b):
        return False
    if isinstance(a, Decimal128):
        return a.to_decimal() == b.to_decimal()
    return a == b


class ArithmeticNode(ModifierNode):
    allow_creation = True

    def __init__(self, op: str, path: str, value: Any) -> None:
        if not is_number(value):
            verb = "increment" if op == "$inc" else "multiply"
            raise CommandError(TYPE_MISMATCH, f"Cannot {verb} with non-numeric argument: "
                               f"{{{render_element(path, value)}}}")
        self.op, self.val = op, value

    def update_existing(self, ref: Ref, ctx: ApplyContext) -> str:
        old = ref.value
        if not is_number(old):
            raise CommandError(TYPE_MISMATCH, f"Cannot apply {self.op} to a value of "
                               f"non-numeric type. {{{root_id(ctx)}}} has the field "
                               f"'{ref.name}' of non-numeric type {type_name(old)}")
        result = safe_arith(self.op, self.val, old)
        if result is not None and identical(result, old):
            return NOOP
        if result is None:
            raise CommandError(BAD_VALUE, f"Failed to apply {self.op} operations to current "
                               f"value ((NumberLong){int(old)}) for document "
                               f"{{{root_id(ctx)}}}")
        ref.value = result
        return NORMAL

    def value_for_new(self, ctx: ApplyContext) -> Any:
        if self.op == "$inc":
            return copy_value(self.val)
        return safe_arith("$mul", self.val, 0)


# ----------------------------------------------------------------- $min, $max

class CompareNode(ModifierNode):
    allow_creation = True
    can_set_object_value = True

    def __init__(self, op: str, value: Any) -> None:
        self.op, self.val = op, copy_value(value)

    def update_existing(self, ref: Ref, ctx: ApplyContext) -> str:
        cmp = compare(ref.value, self.val)
        if cmp == 0 or (cmp > 0 if self.op == "$max" else cmp < 0):
            return NOOP
        ref.value = copy_value(self.val)
        return NORMAL

    def value_for_new(self, ctx: ApplyContext) -> Any:
        return copy_value(self.val)


# ----------------------------------------------------------------- $currentDate

_ts_counter = itertools.count(1)


def _default_cluster_time() -> Timestamp:
    return Timestamp(int(time.time()), next(_ts_counter) % (2 ** 31))


def _now_ms() -> datetime.datetime:
    now = datetime.datetime.now(datetime.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class CurrentDateNode(ModifierNode):
    allow_creation = True

    def __init__(self, value: Any) -> None:
        self.is_date = _parse_current_date(value)

    def _value(self, ctx: ApplyContext) -> Any:
        if self.is_date:
            return (ctx.now or _now_ms)()
        return (ctx.cluster_time or _default_cluster_time)()

    def update_existing(self, ref: Ref, ctx: ApplyContext) -> str:
        ref.value = self._value(ctx)
        return NORMAL

    def value_for_new(self, ctx: ApplyContext) -> Any:
        return self._value(ctx)


def _parse_current_date(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if not is_doc(value):
        raise CommandError(BAD_VALUE, f"{type_name(value)} is not valid type for "
                           "$currentDate. Please use a boolean ('true') or a $type "
                           "expression ({$type: 'timestamp/date'}).")
    found = None
    for key, sub in value.items():
        if key != "$type":
            raise CommandError(BAD_VALUE, f"Unrecognized $currentDate option: {key}")
        if sub in ("date", "timestamp"):
            found = sub == "date"
    if found is None:
        raise CommandError(BAD_VALUE, "The '$type' string field is required to be 'date' or "
                           "'timestamp': {$currentDate: {field : {$type: 'date'}}}")
    return found
