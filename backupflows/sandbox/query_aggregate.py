"""Aggregation stages for the sandbox's aggregate command and pipeline updates.

Stages: $match, $sort, $limit, $skip, $project, $unset, $addFields/$set,
$replaceRoot/$replaceWith, $group, $count, $unwind.  $group supports an _id
expression (field path, null, constant or document of expressions) and the
accumulators $sum, $avg, $min, $max, $first, $last, $push, $addToSet and
$count; groups come out in order of first appearance.  Unknown stages are
CommandError 40324 as on the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from backupflows.sandbox.errors import BAD_VALUE, CommandError
from backupflows.sandbox.query_expr import combine_numbers, compile_expression
from backupflows.sandbox.query_match import cached_filter
from backupflows.sandbox.query_project import add_fields, project
from backupflows.sandbox.query_values import (
    MISSING,
    copy_value,
    is_doc,
    is_number,
    type_name,
    value_key,
)

Stage = Callable[[list[dict]], list[dict]]

# Stages a pipeline-style update may use (PipelineExecutor allows these).
UPDATE_STAGES = frozenset(
    ("$addFields", "$set", "$project", "$unset", "$replaceRoot", "$replaceWith"))


def stage_name(stage: Any) -> str:
    if not is_doc(stage) or len(stage) != 1:
        raise CommandError(40323, "A pipeline stage specification object must contain "
                           "exactly one field.")
    return next(iter(stage))


def compile_stage(stage: Mapping) -> Stage:
    name = stage_name(stage)
    builder = _STAGES.get(name)
    if builder is None:
        raise CommandError(40324, f"Unrecognized pipeline stage name: '{name}'")
    return builder(stage[name])


def aggregate(docs: Iterable[Mapping], pipeline: list[Mapping]) -> list[dict]:
    if not isinstance(pipeline, list):
        raise CommandError(14, "'pipeline' option must be specified as an array")
    stages = [compile_stage(s) for s in pipeline]
    current = [d if isinstance(d, dict) else dict(d) for d in docs]
    for stage in stages:
        current = stage(current)
    return [copy_value(d) for d in current]


# ----------------------------------------------------------------- simple stages

def _match(spec: Any) -> Stage:
    if not is_doc(spec):
        raise CommandError(15959, "the match filter must be an expression in an object")
    matcher = cached_filter(spec)
    return lambda docs: [d for d in docs if matcher(d, [None])]


def _sort(spec: Any) -> Stage:
    from backupflows.sandbox.query import sort_docs
    if not is_doc(spec) or not spec:
        raise CommandError(15976, "$sort stage must have at least one sort key")
    return lambda docs: sort_docs(docs, spec)


def _count_arg(spec: Any, code: int, what: str, allow_zero: bool) -> int:
    if not is_number(spec) or float(str(spec)) != int(float(str(spec))):
        raise CommandError(code, f"invalid argument to {what} stage")
    value = int(float(str(spec)))
    if value < 0 or (value == 0 and not allow_zero):
        raise CommandError(code, f"the {what[1:]} must be positive" if not allow_zero
                           else "Argument to $skip cannot be negative")
    return value


def _limit(spec: Any) -> Stage:
    n = _count_arg(spec, 15958, "$limit", allow_zero=False)
    return lambda docs: docs[:n]


def _skip(spec: Any) -> Stage:
    n = _count_arg(spec, 15956, "$skip", allow_zero=True)
    return lambda docs: docs[n:]


def sample_size(spec: Any) -> int:
    if not is_doc(spec) or list(spec) != ["size"]:
        raise CommandError(28745, "$sample stage must specify a size")
    return _count_arg(spec["size"], 28747, "$sample", allow_zero=True)


def _sample(spec: Any) -> Stage:
    import random
    n = sample_size(spec)
    return lambda docs: random.sample(docs, min(n, len(docs)))


def _project(spec: Any) -> Stage:
    if not is_doc(spec) or not spec:
        raise CommandError(51272, "$project specification must be a non-empty object")
    project({}, spec)  # validate eagerly
    return lambda docs: [project(d, spec) for d in docs]


def _unset(spec: Any) -> Stage:
    fields = [spec] if isinstance(spec, str) else spec
    if not isinstance(fields, list) or not fields or not all(isinstance(f, str) for f in fields):
        raise CommandError(31002, "$unset specification must be a string or an array "
                           "containing only string values")
    projection = {f: 0 for f in fields}
    return lambda docs: [project(d, projection) for d in docs]


def _add_fields(spec: Any) -> Stage:
    if not is_doc(spec):
        raise CommandError(40272, "$addFields specification stage must be an object")
    return lambda docs: [add_fields(d, spec) for d in docs]


def _replace_root(spec: Any) -> Stage:
    if not is_doc(spec) or "newRoot" not in spec:
        raise CommandError(40231, "no newRoot specified for the $replaceRoot stage")
    return _replace_with(spec["newRoot"])


def _replace_with(spec: Any) -> Stage:
    expr = compile_expression(spec)

    def run(docs: list[dict]) -> list[dict]:
        out = []
        for doc in docs:
            value = expr(doc)
            if not is_doc(value):
                raise CommandError(40228, "'newRoot' expression must evaluate to an "
                                   f"object, but resulting value was: {value!r}. Type of "
                                   f"resulting value: '{type_name(value) if value is not MISSING else 'missing'}'.")
            out.append(dict(value))
        return out
    return run


def _count(spec: Any) -> Stage:
    if not isinstance(spec, str) or not spec or spec.startswith("$") or "." in spec:
        raise CommandError(40156, "the count field must be a non-empty string that does "
                           "not start with $ and does not contain '.'")
    return lambda docs: [{spec: len(docs)}] if docs else []


def _unwind(spec: Any) -> Stage:
    options = spec if is_doc(spec) else {"path": spec}
    path = options.get("path")
    if not isinstance(path, str) or not path.startswith("$"):
        raise CommandError(28818, "path option to $unwind stage should be prefixed with a "
                           "'$'")
    parts = path[1:].split(".")
    keep = bool(options.get("preserveNullAndEmptyArrays", False))
    index_field = options.get("includeArrayIndex")

    def run(docs: list[dict]) -> list[dict]:
        out = []
        for doc in docs:
            out.extend(_unwind_one(doc, parts, keep, index_field))
        return out
    return run


def _unwind_one(doc: dict, parts: list[str], keep: bool, index_field: Any) -> list[dict]:
    from backupflows.sandbox.query_project import _set_path
    value: Any = doc
    for part in parts:
        value = value.get(part, MISSING) if is_doc(value) else MISSING
    if isinstance(value, list) and value:
        out = []
        for i, elem in enumerate(value):
            copy = copy_value(doc)
            _set_path(copy, parts, elem)
            if index_field:
                copy[index_field] = i
            out.append(copy)
        return out
    if isinstance(value, list) or value is MISSING or value is None:
        if not keep:
            return []
        copy = copy_value(doc)
        if isinstance(value, list):
            _set_path(copy, parts, MISSING)
        if index_field:
            copy[index_field] = None
        return [copy]
    copy = copy_value(doc)
    if index_field:
        copy[index_field] = None
    return [copy]


# ----------------------------------------------------------------- $group

class _Accumulator:
    def __init__(self, op: str, expr: Callable[[Any], Any]) -> None:
        self.op, self.expr = op, expr

    def initial(self) -> Any:
        return {"$sum": 0, "$avg": [0, 0], "$push": [], "$addToSet": [],
                "$count": 0}.get(self.op, MISSING)

    def step(self, state: Any, doc: Any) -> Any:
        if self.op == "$count":
            return state + 1
        value = self.expr(doc)
        return _ACC_STEPS[self.op](state, value)

    def final(self, state: Any) -> Any:
        if self.op == "$avg":
            total, n = state
            return None if n == 0 else float(str(total)) / n
        if self.op in ("$min", "$max", "$first", "$last"):
            return None if state is MISSING else state
        return state


def _sum_step(state: Any, value: Any) -> Any:
    return combine_numbers(state, value, lambda a, b: a + b) if is_number(value) else state


def _avg_step(state: Any, value: Any) -> Any:
    if not is_number(value):
        return state
    return [combine_numbers(state[0], value, lambda a, b: a + b), state[1] + 1]


def _extreme_step(sign: int) -> Callable[[Any, Any], Any]:
    def step(state: Any, value: Any) -> Any:
        if value is MISSING or value is None:
            return state
        if state is MISSING:
            return value
        better = value_key(value) < value_key(state) if sign < 0 else \
            value_key(value) > value_key(state)
        return value if better else state
    return step


def _add_to_set_step(state: list, value: Any) -> list:
    if value is not MISSING and all(value_key(v) != value_key(value) for v in state):
        state.append(value)
    return state


_ACC_STEPS: dict[str, Callable[[Any, Any], Any]] = {
    "$sum": _sum_step, "$avg": _avg_step,
    "$min": _extreme_step(-1), "$max": _extreme_step(1),
    "$first": lambda state, v: (None if v is MISSING else v) if state is MISSING else state,
    "$last": lambda state, v: None if v is MISSING else v,
    "$push": lambda state, v: state + [v] if v is not MISSING else state,
    "$addToSet": _add_to_set_step,
}


def _group(spec: Any) -> Stage:
    if not is_doc(spec) or "_id" not in spec:
        raise CommandError(15955, "a group specification must include an _id")
    key_expr = compile_expression(spec["_id"])
    accumulators = [(name, _parse_accumulator(name, acc))
                    for name, acc in spec.items() if name != "_id"]

    def run(docs: list[dict]) -> list[dict]:
        groups: dict[bytes, tuple[Any, list]] = {}
        for doc in docs:
            key = key_expr(doc)
            key = None if key is MISSING else key
            raw = value_key(key)
            if raw not in groups:
                groups[raw] = (key, [a.initial() for _, a in accumulators])
            states = groups[raw][1]
            for i, (_, acc) in enumerate(accumulators):
                states[i] = acc.step(states[i], doc)
        return [_group_output(key, states, accumulators) for key, states in groups.values()]
    return run


def _group_output(key: Any, states: list, accumulators: list) -> dict:
    out = {"_id": key}
    for (name, acc), state in zip(accumulators, states):
        out[name] = acc.final(state)
    return out


def _parse_accumulator(name: str, spec: Any) -> _Accumulator:
    if not is_doc(spec) or len(spec) != 1:
        raise CommandError(40238, f"The field '{name}' must specify one accumulator")
    op = next(iter(spec))
    if op not in _ACC_STEPS and op != "$count":
        raise CommandError(15952, f"unknown group operator '{op}'")
    if op == "$count":
        if spec[op] != {}:
            raise CommandError(BAD_VALUE, "$count takes no arguments, i.e. $count:{}")
        return _Accumulator(op, lambda doc: None)
    return _Accumulator(op, compile_expression(spec[op]))


_STAGES: dict[str, Callable[[Any], Stage]] = {
    "$match": _match, "$sort": _sort, "$limit": _limit, "$skip": _skip,
    "$project": _project, "$unset": _unset, "$addFields": _add_fields, "$set": _add_fields,
    "$replaceRoot": _replace_root, "$replaceWith": _replace_with, "$group": _group,
    "$count": _count, "$unwind": _unwind, "$sample": _sample,
}
