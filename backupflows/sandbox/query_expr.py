"""A small aggregation-expression evaluator (src/mongo/db/pipeline/expression.cpp).

Supported: field paths ("$a.b", mapped over arrays), $$ROOT/$$CURRENT/$$REMOVE/
$$NOW, literals, object and array expressions, and the operators $literal,
$concat, $add, $subtract, $multiply, $divide, $mod, $ifNull, $eq, $ne, $gt,
$gte, $lt, $lte, $cmp, $and, $or, $not, $cond, $size, $in, $arrayElemAt,
$toLower, $toUpper, $type, $isArray, $mergeObjects.  Anything else is
CommandError 168 (InvalidPipelineOperator), as the server answers.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128, create_decimal128_context
from bson.int64 import Int64

from backupflows.sandbox.errors import BAD_VALUE, TYPE_MISMATCH, CommandError
from backupflows.sandbox.query_values import (
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    MISSING,
    bson_type,
    copy_value,
    is_doc,
    is_number,
    truthy,
    type_name,
    value_key,
)

Expr = Callable[[Any], Any]
INVALID_PIPELINE_OPERATOR = 168
_DEC_CTX = create_decimal128_context()


def compile_expression(spec: Any) -> Expr:
    """Compile an aggregation expression into a function of the root document."""
    if isinstance(spec, str) and spec.startswith("$"):
        return _path_or_variable(spec)
    if is_doc(spec):
        keys = list(spec)
        if keys and keys[0].startswith("$"):
            if len(keys) != 1:
                raise CommandError(15983, "an expression specification must contain "
                                   f"exactly one field, the name of the expression. "
                                   f"Found {len(keys)} fields")
            return _operator(keys[0], spec[keys[0]])
        return _object_expr(spec)
    if isinstance(spec, list):
        items = [compile_expression(s) for s in spec]
        return lambda root: [_none_if_missing(f(root)) for f in items]
    return lambda root: copy_value(spec)


def _none_if_missing(value: Any) -> Any:
    return None if value is MISSING else value


def _object_expr(spec: Mapping) -> Expr:
    fields = [(name, compile_expression(sub)) for name, sub in spec.items()]

    def evaluate(root: Any) -> Any:
        out = {}
        for name, fn in fields:
            value = fn(root)
            if value is not MISSING:
                out[name] = value
        return out
    return evaluate


def _path_or_variable(spec: str) -> Expr:
    if spec.startswith("$$"):
        name, _, rest = spec[2:].partition(".")
        parts = rest.split(".") if rest else []
        if name in ("ROOT", "CURRENT"):
            return lambda root: resolve_path(root, parts)
        if name == "REMOVE":
            return lambda root: MISSING
        if name == "NOW":
            return lambda root: _now()
        raise CommandError(17276, f"Use of undefined variable: {name}")
    if spec == "$":
        raise CommandError(16872, "'$' by itself is not a valid FieldPath")
    parts = spec[1:].split(".")
    return lambda root: resolve_path(root, parts)


def _now() -> datetime.datetime:
    now = datetime.datetime.now(datetime.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def resolve_path(value: Any, parts: list[str]) -> Any:
    """Aggregation field-path semantics: arrays are mapped over, missing values
    inside arrays are dropped, a missing path is MISSING."""
    for i, part in enumerate(parts):
        if isinstance(value, list):
            out = []
            for elem in value:
                sub = resolve_path(elem, parts[i:])
                if sub is not MISSING:
                    out.append(sub)
            return out
        if not is_doc(value) or part not in value:
            return MISSING
        value = value[part]
    return copy_value(value)


# ----------------------------------------------------------------- operators

def _args(spec: Any) -> list[Expr]:
    items = spec if isinstance(spec, list) else [spec]
    return [compile_expression(s) for s in items]


def _arity(name: str, args: list[Expr], n: int) -> None:
    if len(args) != n:
        raise CommandError(16020, f"Expression {name} takes exactly {n} arguments. "
                           f"{len(args)} were passed in.")


def _operator(name: str, spec: Any) -> Expr:
    if name == "$literal":
        return lambda root: copy_value(spec)
    if name == "$cond":
        return _cond(spec)
    builder = _OPERATORS.get(name)
    if builder is None:
        raise CommandError(INVALID_PIPELINE_OPERATOR, f"Unrecognized expression '{name}'")
    return builder(name, _args(spec))


def _cond(spec: Any) -> Expr:
    if is_doc(spec):
        parts = [spec.get("if"), spec.get("then"), spec.get("else")]
    elif isinstance(spec, list) and len(spec) == 3:
        parts = list(spec)
    else:
        raise CommandError(16020, "Expression $cond takes exactly 3 arguments.")
    cond, then, other = (compile_expression(p) for p in parts)
    return lambda root: then(root) if truthy(cond(root)) else other(root)


def _concat(name: str, args: list[Expr]) -> Expr:
    def evaluate(root: Any) -> Any:
        out = []
        for fn in args:
            value = fn(root)
            if value is None or value is MISSING:
                return None
            if not isinstance(value, str):
                raise CommandError(16702, "$concat only supports strings, not "
                                   f"{type_name(value)}")
            out.append(value)
        return "".join(out)
    return evaluate


def _if_null(name: str, args: list[Expr]) -> Expr:
    if len(args) < 2:
        raise CommandError(1257300, "$ifNull needs at least two arguments")

    def evaluate(root: Any) -> Any:
        for fn in args[:-1]:
            value = fn(root)
            if value is not None and value is not MISSING:
                return value
        return args[-1](root)
    return evaluate


def _comparison(name: str, args: list[Expr]) -> Expr:
    _arity(name, args, 2)
    tests = {"$eq": lambda c: c == 0, "$ne": lambda c: c != 0, "$gt": lambda c: c > 0,
             "$gte": lambda c: c >= 0, "$lt": lambda c: c < 0, "$lte": lambda c: c <= 0,
             "$cmp": lambda c: c}
    test = tests[name]

    def evaluate(root: Any) -> Any:
        a, b = args[0](root), args[1](root)
        ka, kb = _agg_key(a), _agg_key(b)
        return test((ka > kb) - (ka < kb))
    return evaluate


def _agg_key(value: Any) -> bytes:
    """Missing sorts below every value (even null) in expression comparisons."""
    return b"\x00" if value is MISSING else value_key(value)


def _logical(name: str, args: list[Expr]) -> Expr:
    if name == "$not":
        _arity(name, args, 1)
        return lambda root: not truthy(args[0](root))
    if name == "$and":
        return lambda root: all(truthy(fn(root)) for fn in args)
    return lambda root: any(truthy(fn(root)) for fn in args)


def _size(name: str, args: list[Expr]) -> Expr:
    _arity(name, args, 1)

    def evaluate(root: Any) -> Any:
        value = args[0](root)
        if not isinstance(value, list):
            raise CommandError(17124, "The argument to $size must be an array. "
                               f"Type of argument: {_tname(value)}")
        return len(value)
    return evaluate


def _tname(value: Any) -> str:
    return "missing" if value is MISSING else type_name(value)


def _in(name: str, args: list[Expr]) -> Expr:
    _arity(name, args, 2)

    def evaluate(root: Any) -> Any:
        needle, hay = args[0](root), args[1](root)
        if not isinstance(hay, list):
            raise CommandError(40081, "$in requires an array as a second argument, "
                               f"found: {_tname(hay)}")
        key = _agg_key(needle)
        return any(_agg_key(v) == key for v in hay)
    return evaluate


def _array_elem_at(name: str, args: list[Expr]) -> Expr:
    _arity(name, args, 2)

    def evaluate(root: Any) -> Any:
        arr, idx = args[0](root), args[1](root)
        if arr is None or arr is MISSING or idx is None or idx is MISSING:
            return None
        if not isinstance(arr, list):
            raise CommandError(28689, "$arrayElemAt's first argument must be an array, "
                               f"but is {_tname(arr)}")
        if not is_number(idx) or float(str(idx)) != int(float(str(idx))):
            raise CommandError(28691, "$arrayElemAt's second argument must be a numeric "
                               "value representable as a 32-bit integral value")
        pos = int(float(str(idx)))
        if pos < -len(arr) or pos >= len(arr):
            return MISSING
        return arr[pos]
    return evaluate


def _case(name: str, args: list[Expr]) -> Expr:
    _arity(name, args, 1)

    def evaluate(root: Any) -> Any:
        value = args[0](root)
        if value is None or value is MISSING:
            return ""
        text = value if isinstance(value, str) else str(value)
        return text.lower() if name == "$toLower" else text.upper()
    return evaluate


def _type_of(name: str, args: list[Expr]) -> Expr:
    _arity(name, args, 1)
    return lambda root: _tname(args[0](root))


def _is_array(name: str, args: list[Expr]) -> Expr:
    _arity(name, args, 1)
    return lambda root: isinstance(args[0](root), list)


def _merge_objects(name: str, args: list[Expr]) -> Expr:
    def evaluate(root: Any) -> Any:
        out: dict = {}
        for fn in args:
            value = fn(root)
            if value is None or value is MISSING:
                continue
            if not is_doc(value):
                raise CommandError(40400, "$mergeObjects requires object inputs, but "
                                   f"input {value!r} is of type {_tname(value)}")
            out.update(value)
        return out
    return evaluate


# ----------------------------------------------------------------- arithmetic

def _arith(name: str, args: list[Expr]) -> Expr:
    if name in ("$subtract", "$divide", "$mod"):
        _arity(name, args, 2)

    def evaluate(root: Any) -> Any:
        values = [fn(root) for fn in args]
        if any(v is None or v is MISSING for v in values):
            return None
        for v in values:
            if not is_number(v) and not isinstance(v, datetime.datetime):
                raise CommandError(TYPE_MISMATCH, f"{name} only supports numeric types, "
                                   f"not {type_name(v)}")
        return _fold(name, values)
    return evaluate


def _fold(name: str, values: list[Any]) -> Any:
    if name == "$add":
        return _add_all(values)
    if name == "$multiply":
        result: Any = 1
        for v in values:
            result = combine_numbers(result, v, lambda a, b: a * b)
        return result
    a, b = values
    if name == "$subtract":
        if isinstance(a, datetime.datetime):
            if isinstance(b, datetime.datetime):
                return Int64(int((a - b).total_seconds() * 1000))
            return a - datetime.timedelta(milliseconds=float(str(b)))
        return combine_numbers(a, b, lambda x, y: x - y)
    if _as_decimal(b) == 0:
        raise CommandError(BAD_VALUE, f"can't {name[1:]} by zero")
    if name == "$divide":
        if isinstance(a, Decimal128) or isinstance(b, Decimal128):
            return Decimal128(_DEC_CTX.divide(_as_decimal(a), _as_decimal(b)))
        return float(a) / float(b)
    return combine_numbers(a, b, _c_mod)


def _c_mod(a: Any, b: Any) -> Any:
    if isinstance(a, float) or isinstance(b, float):
        import math
        return math.fmod(a, b)
    result = abs(a) % abs(b)
    return -result if a < 0 else result


def _add_all(values: list[Any]) -> Any:
    dates = [v for v in values if isinstance(v, datetime.datetime)]
    if len(dates) > 1:
        raise CommandError(16612, "only one date allowed in an $add expression")
    total: Any = 0
    for v in values:
        if not isinstance(v, datetime.datetime):
            total = combine_numbers(total, v, lambda a, b: a + b)
    if dates:
        return dates[0] + datetime.timedelta(milliseconds=float(str(total)))
    return total


def _as_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal128):
        return value.to_decimal()
    return Decimal(str(value)) if isinstance(value, float) else Decimal(int(value))


def combine_numbers(a: Any, b: Any, op: Callable[[Any, Any], Any]) -> Any:
    """Aggregation arithmetic type rules: int -> long -> double widening on
    overflow, double if either is a double, decimal if either is a decimal."""
    types = {bson_type(a), bson_type(b)}
    if 19 in types:
        return Decimal128(_DEC_CTX.create_decimal(op(_as_decimal(a), _as_decimal(b))))
    if 1 in types:
        return float(op(float(a), float(b)))
    result = op(int(a), int(b))
    if 18 not in types and INT32_MIN <= result <= INT32_MAX:
        return int(result)
    if INT64_MIN <= result <= INT64_MAX:
        return Int64(result)
    return float(result)


_OPERATORS: dict[str, Callable[[str, list[Expr]], Expr]] = {
    "$concat": _concat, "$ifNull": _if_null,
    "$eq": _comparison, "$ne": _comparison, "$gt": _comparison, "$gte": _comparison,
    "$lt": _comparison, "$lte": _comparison, "$cmp": _comparison,
    "$and": _logical, "$or": _logical, "$not": _logical,
    "$add": _arith, "$subtract": _arith, "$multiply": _arith, "$divide": _arith,
    "$mod": _arith, "$size": _size, "$in": _in, "$arrayElemAt": _array_elem_at,
    "$toLower": _case, "$toUpper": _case, "$type": _type_of, "$isArray": _is_array,
    "$mergeObjects": _merge_objects,
}
