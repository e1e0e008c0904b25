"""Query filters compiled into predicates, with the server's matching rules.

Semantics follow src/mongo/db/matcher/ of the MongoDB server:
- a dotted path is resolved with implicit array traversal: an array met along
  the path is searched element by element (documents only), a numeric
  component also indexes the array, and a path that is absent in an element
  (or runs into a scalar) yields "missing";
- an operator is tested against every value the path resolves to and, when
  that value is an array, against the array itself and each of its elements
  ($size, $elemMatch and $exists look at the value only);
- several operators on one path are independent ({a: {$gt: 1, $lt: 3}}
  matches {a: [0, 5]}); $ne/$nin/$not/$nor are the negation of the positive
  match;
- comparisons are type-bracketed (a $gt on a number matches numbers only)
  and use the server order (backupflows.bsonorder); {a: null} matches a null
  or missing a;
- the index of the first array element a match went through is recorded, as
  the server's MatchDetails::elemMatchKey, for the positional update `$`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import bson
from bson.decimal128 import Decimal128
from bson.regex import Regex

from backupflows.bsonorder import MAXKEY, MINKEY
from backupflows.sandbox.errors import BAD_VALUE, CommandError
from backupflows.sandbox.query_values import (
    MISSING,
    NUMERIC_TYPES,
    TYPE_NAMES,
    bson_type,
    compile_regex,
    is_doc,
    is_number,
    parse_index,
    regex_flags,
    to_regex,
    truthy,
    value_key,
)

# A compiled matcher: (document, detail) -> bool.  ``detail`` is a one-slot
# list that receives the elemMatchKey of the first successful array match.
Matcher = Callable[[Any, list], bool]
Candidate = tuple[Any, "str | None"]


def path_candidates(doc: Any, parts: list[str]) -> list[Candidate]:
    """Every value ``parts`` resolves to in ``doc`` (MISSING where absent), each
    with the index of the first array element traversed to reach it."""
    out: list[Candidate] = []
    _walk(doc, parts, 0, None, out)
    return out


def _walk(value: Any, parts: list[str], i: int, idx: str | None,
          out: list[Candidate]) -> None:
    if i == len(parts):
        out.append((value, idx))
        return
    part = parts[i]
    if is_doc(value):
        if part in value:
            _walk(value[part], parts, i + 1, idx, out)
        else:
            out.append((MISSING, idx))
    elif isinstance(value, list):
        before = len(out)
        pos = parse_index(part)
        if pos is not None and pos < len(value):
            _walk(value[pos], parts, i + 1, idx if idx is not None else part, out)
        for j, elem in enumerate(value):
            if is_doc(elem):
                _walk(elem, parts, i, idx if idx is not None else str(j), out)
        if len(out) == before:
            out.append((MISSING, idx))
    else:
        out.append((MISSING, idx))


def _any_value(parts: list[str], pred: Callable[[Any], bool],
               expand: bool = True) -> Matcher:
    """Match when ``pred`` holds for a value at the path (or, for arrays, one of
    its elements when ``expand``)."""
    def match(doc: Any, detail: list) -> bool:
        for value, idx in path_candidates(doc, parts):
            if pred(value):
                _record(detail, idx)
                return True
            if expand and isinstance(value, list):
                for j, elem in enumerate(value):
                    if pred(elem):
                        _record(detail, idx if idx is not None else str(j))
                        return True
        return False
    return match


def _record(detail: list, idx: str | None) -> None:
    if idx is not None and detail and detail[0] is None:
        detail[0] = idx


def _negate(inner: Matcher) -> Matcher:
    return lambda doc, detail: not inner(doc, [None])


def _all_of(matchers: list[Matcher]) -> Matcher:
    if len(matchers) == 1:
        return matchers[0]
    return lambda doc, detail: all(m(doc, detail) for m in matchers)


# ----------------------------------------------------------------- leaf predicates

def _eq_pred(operand: Any) -> Callable[[Any], bool]:
    if isinstance(operand, Regex) or _is_pattern(operand):
        return _regex_pred(to_regex(operand), operand)
    key = value_key(operand)
    return lambda value: value_key(value) == key


def _regex_pred(pattern: Any, original: Any = None) -> Callable[[Any], bool]:
    key = value_key(original) if isinstance(original, Regex) else None

    def pred(value: Any) -> bool:
        if isinstance(value, str):
            return pattern.search(value) is not None
        return key is not None and isinstance(value, Regex) and value_key(value) == key
    return pred


def _cmp_pred(op: str, operand: Any) -> Callable[[Any], bool]:
    key = value_key(operand)
    bracket = key[0]
    tests = {"$gt": lambda k: k > key, "$gte": lambda k: k >= key,
             "$lt": lambda k: k < key, "$lte": lambda k: k <= key}
    test = tests[op]

    if bracket in (MINKEY, MAXKEY):
        # The server does not type-bracket comparisons with MinKey/MaxKey:
        # every value is above MinKey and below MaxKey.
        return lambda value: test(value_key(value))

    def pred(value: Any) -> bool:
        vkey = value_key(value)
        return vkey[0] == bracket and test(vkey)
    return pred


def _in_pred(operand: Any, op: str = "$in") -> Callable[[Any], bool]:
    if not isinstance(operand, list):
        raise CommandError(BAD_VALUE, f"{op} needs an array")
    preds = []
    for item in operand:
        if is_doc(item) and item and next(iter(item)).startswith("$"):
            raise CommandError(BAD_VALUE, f"cannot nest $ under {op}")
        preds.append(_eq_pred(item))
    return lambda value: any(p(value) for p in preds)


def _type_pred(operand: Any) -> Callable[[Any], bool]:
    items = operand if isinstance(operand, list) else [operand]
    codes: set[int] = set()
    for item in items:
        if isinstance(item, str):
            if item == "number":
                codes |= NUMERIC_TYPES
            elif item in TYPE_NAMES:
                codes.add(TYPE_NAMES[item])
            else:
                raise CommandError(BAD_VALUE, f"Unknown type name alias: {item}")
        elif is_number(item) and float(str(item)) in TYPE_NAMES.values():
            codes.add(int(float(str(item))))
        else:
            raise CommandError(BAD_VALUE, f"Invalid numerical type code: {item}")
    return lambda value: value is not MISSING and bson_type(value) in codes


def _mod_pred(operand: Any) -> Callable[[Any], bool]:
    if not isinstance(operand, list):
        raise CommandError(BAD_VALUE, "malformed mod, needs to be an array")
    if len(operand) < 2:
        raise CommandError(BAD_VALUE, "malformed mod, not enough elements")
    if len(operand) > 2:
        raise CommandError(BAD_VALUE, "malformed mod, too many elements")
    if not all(is_number(x) for x in operand):
        raise CommandError(BAD_VALUE, "malformed mod, divisor and remainder not numbers")
    divisor, remainder = (_trunc(x) for x in operand)
    if divisor == 0:
        raise CommandError(BAD_VALUE, "divisor cannot be 0")

    def pred(value: Any) -> bool:
        if not is_number(value):
            return False
        num = _trunc(value)
        return num is not None and math.fmod(num, divisor) == remainder
    return pred


def _trunc(value: Any) -> int | None:
    number = float(str(value)) if isinstance(value, Decimal128) else float(value)
    if math.isnan(number) or math.isinf(number):
        return None
    return int(number)


def _size_pred(operand: Any) -> Callable[[Any], bool]:
    if not is_number(operand):
        raise CommandError(BAD_VALUE, "$size needs a number")
    size = float(str(operand))
    if size != int(size):
        raise CommandError(BAD_VALUE, "$size must be a whole number")
    if size < 0:
        raise CommandError(BAD_VALUE, "$size may not be negative")
    return lambda value: isinstance(value, list) and len(value) == size


# ----------------------------------------------------------------- compilation

def compile_filter(filt: Mapping) -> Matcher:
    """Compile a query document into a matcher."""
    if not is_doc(filt):
        raise CommandError(BAD_VALUE, "query filter must be an object")
    matchers: list[Matcher] = []
    for key, value in filt.items():
        if key.startswith("$"):
            matchers.append(_top_level(key, value))
        else:
            matchers.extend(_path_matchers(key, value))
    if not matchers:
        return lambda doc, detail: True
    return _all_of(matchers)


def _top_level(op: str, value: Any) -> Matcher:
    if op in ("$and", "$or", "$nor"):
        if not isinstance(value, list) or not value:
            raise CommandError(BAD_VALUE, f"{op} argument must be a non-empty array")
        if not all(is_doc(v) for v in value):
            raise CommandError(BAD_VALUE, f"{op} argument's entries must be objects")
        subs = [compile_filter(v) for v in value]
        if op == "$and":
            return _all_of(subs)
        if op == "$or":
            return lambda doc, detail: any(s(doc, detail) for s in subs)
        return lambda doc, detail: not any(s(doc, [None]) for s in subs)
    if op == "$expr":
        from backupflows.sandbox.query_expr import compile_expression
        expr = compile_expression(value)
        return lambda doc, detail: truthy(expr(doc))
    if op == "$comment":
        return lambda doc, detail: True
    if op in ("$alwaysTrue", "$alwaysFalse"):
        result = op == "$alwaysTrue"
        return lambda doc, detail: result
    raise CommandError(BAD_VALUE, f"unknown top level operator: {op}")


def _path_matchers(path: str, cond: Any) -> list[Matcher]:
    parts = path.split(".")
    if is_doc(cond) and cond and next(iter(cond)).startswith("$"):
        return _operator_matchers(parts, cond)
    if isinstance(cond, Regex) or _is_pattern(cond):
        return [_any_value(parts, _regex_pred(to_regex(cond), cond))]
    return [_any_value(parts, _eq_pred(cond))]


def _is_pattern(value: Any) -> bool:
    return isinstance(value, re.Pattern)


def _operator_matchers(parts: list[str], ops: Mapping) -> list[Matcher]:
    matchers = []
    if "$regex" in ops or "$options" in ops:
        matchers.append(_regex_matcher(parts, ops))
    for op, operand in ops.items():
        if op in ("$regex", "$options"):
            continue
        matchers.append(_operator(parts, op, operand))
    return matchers


def _regex_matcher(parts: list[str], ops: Mapping) -> Matcher:
    if "$regex" not in ops:
        raise CommandError(BAD_VALUE, "$options needs a $regex")
    source = ops["$regex"]
    options = ops.get("$options", "")
    if isinstance(source, Regex):
        pattern = compile_regex(source.pattern, options or regex_flags(source))
    elif isinstance(source, str):
        if not isinstance(options, str):
            raise CommandError(BAD_VALUE, "$options has to be a string")
        pattern = compile_regex(source, options)
    else:
        raise CommandError(BAD_VALUE, "$regex has to be a string")
    return _any_value(parts, _regex_pred(pattern))


def _operator(parts: list[str], op: str, operand: Any) -> Matcher:
    simple = _SIMPLE.get(op)
    if simple is not None:
        return _any_value(parts, simple(op, operand))
    special = _SPECIAL.get(op)
    if special is not None:
        return special(parts, operand)
    raise CommandError(BAD_VALUE, f"unknown operator: {op}")


def _exists(parts: list[str], operand: Any) -> Matcher:
    want = truthy(operand)

    def match(doc: Any, detail: list) -> bool:
        found = any(v is not MISSING for v, _ in path_candidates(doc, parts))
        return found == want
    return match


def _not(parts: list[str], operand: Any) -> Matcher:
    if isinstance(operand, Regex) or _is_pattern(operand):
        inner = _any_value(parts, _regex_pred(to_regex(operand), operand))
    elif is_doc(operand):
        if not operand:
            raise CommandError(BAD_VALUE, "$not cannot be empty")
        if not next(iter(operand)).startswith("$"):
            raise CommandError(BAD_VALUE, "$not needs a regex or a document")
        inner = _all_of(_operator_matchers(parts, operand))
    else:
        raise CommandError(BAD_VALUE, "$not needs a regex or a document")
    return _negate(inner)


def _elem_match(parts: list[str], operand: Any) -> Matcher:
    if not is_doc(operand):
        raise CommandError(BAD_VALUE, "$elemMatch needs an Object")
    first = next(iter(operand), "")
    if first.startswith("$") and first not in ("$and", "$or", "$nor", "$expr", "$where"):
        ops = _operator_matchers(["v"], operand)

        def elem_ok(elem: Any) -> bool:
            return all(m({"v": elem}, [None]) for m in ops)
    else:
        sub = compile_filter(operand)

        def elem_ok(elem: Any) -> bool:
            return (is_doc(elem) or isinstance(elem, list)) and sub(elem, [None])

    def match(doc: Any, detail: list) -> bool:
        for value, idx in path_candidates(doc, parts):
            if isinstance(value, list):
                for j, elem in enumerate(value):
                    if elem_ok(elem):
                        _record(detail, idx if idx is not None else str(j))
                        return True
        return False
    return match


def _all(parts: list[str], operand: Any) -> Matcher:
    if not isinstance(operand, list):
        raise CommandError(BAD_VALUE, "$all needs an array")
    if not operand:
        return lambda doc, detail: False
    matchers = []
    for item in operand:
        if is_doc(item) and "$elemMatch" in item:
            matchers.append(_elem_match(parts, item["$elemMatch"]))
        elif is_doc(item) and item and next(iter(item)).startswith("$"):
            raise CommandError(BAD_VALUE, "no $ expressions in $all")
        else:
            matchers.append(_any_value(parts, _eq_pred(item)))
    return _all_of(matchers)


def _size(parts: list[str], operand: Any) -> Matcher:
    return _any_value(parts, _size_pred(operand), expand=False)


def _ne(parts: list[str], operand: Any) -> Matcher:
    return _negate(_any_value(parts, _eq_pred(operand)))


def _nin(parts: list[str], operand: Any) -> Matcher:
    return _negate(_any_value(parts, _in_pred(operand, "$nin")))


def _type(parts: list[str], operand: Any) -> Matcher:
    return _any_value(parts, _type_pred(operand))


_SIMPLE: dict[str, Callable[[str, Any], Callable[[Any], bool]]] = {
    "$eq": lambda op, x: _eq_pred(x),
    "$gt": _cmp_pred, "$gte": _cmp_pred, "$lt": _cmp_pred, "$lte": _cmp_pred,
    "$in": lambda op, x: _in_pred(x),
    "$mod": lambda op, x: _mod_pred(x),
}
_SPECIAL: dict[str, Callable[[list[str], Any], Matcher]] = {
    "$ne": _ne, "$nin": _nin, "$exists": _exists, "$not": _not, "$type": _type,
    "$elemMatch": _elem_match, "$all": _all, "$size": _size,
}

PATH_ACCEPTING_OPERATORS = frozenset(
    set(_SIMPLE) | set(_SPECIAL) | {"$regex", "$options"})


# ----------------------------------------------------------------- cache

_CACHE: dict[bytes, Matcher] = {}


def cached_filter(filt: Mapping) -> Matcher:
    """compile_filter memoised by the filter's BSON bytes."""
    try:
        raw = bson.encode(filt)
    except (TypeError, bson.errors.InvalidDocument):
        return compile_filter(filt)
    matcher = _CACHE.get(raw)
    if matcher is None:
        matcher = compile_filter(filt)
        if len(_CACHE) > 512:
            _CACHE.clear()
        _CACHE[raw] = matcher
    return matcher


def match_details(doc: Mapping, filt: Mapping) -> tuple[bool, str | None]:
    """Whether ``doc`` matches, and the elemMatchKey (array index as a string)."""
    detail: list = [None]
    return cached_filter(filt)(doc, detail), detail[0]

