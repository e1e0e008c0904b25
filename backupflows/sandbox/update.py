"""The sandbox's update engine: new documents and the exact oplog `o` of MongoDB 7.0.

Public API (called by the wire layer's update/findAndModify):

    apply_update(doc, update, *, array_filters=None, upsert_insert=False,
                 query=None, now=None, cluster_time=None) -> UpdateOutcome
    upsert_document(filter, update, *, array_filters=None, ...) -> dict

``UpdateOutcome.oplog_o`` is what a 7.0 primary writes as the `o` of the update
entry, or None when the update changed nothing (then no entry is written):

- operator updates (``{$set: ...}``): the update tree of update_tree.py applies
  the modifiers of update_modifiers.py in lexicographic path order and logs
  every change into a V2LogBuilder (update_log.py): ``{$v: 2, diff: {...}}``;
  the UpdateDriver writes no entry when every modifier was a no-op
  (update_driver.cpp, update_tree_executor.h);
- replacements (a document without operators): the full new document, _id
  kept (first) when the replacement has none; a no-op when the replacement is
  binary-identical to the old document (object_replace_executor.cpp);
- pipeline updates (a list of $set/$addFields/$unset/$project/$replaceRoot/
  $replaceWith stages with the expressions of query_expr.py): the before/after
  diff of update_diff.py, or the full document when that diff is not smaller
  (pipeline_executor.cpp).  One deliberate difference: the server diffs the
  pipeline's output, the sandbox diffs the stored post-image; they differ only
  when the pipeline drops _id (which the replacement keeps), where the server's
  diff would delete _id.

``query`` gives the filter the document matched, needed by the positional `$`
(its array index comes from the match, as MatchDetails::elemMatchKey).  ``now``
and ``cluster_time`` (callables) supply $currentDate's date and timestamp.

Upserts (produce_document_for_upsert.cpp, path_support.cpp): the inserted
document starts from the equality conditions of the filter (all of them for an
operator or pipeline update, only _id for a replacement), set in byte order of
their paths; the update is applied as an insert (so $setOnInsert applies);
_id is moved first, or a new ObjectId is generated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import bson
from bson.objectid import ObjectId

from backupflows.sandbox.errors import (
    BAD_VALUE,
    FAILED_TO_PARSE,
    IMMUTABLE_FIELD,
    INVALID_OPTIONS,
    CommandError,
)
from backupflows.sandbox.query_aggregate import UPDATE_STAGES, compile_stage, stage_name
from backupflows.sandbox.query_match import match_details
from backupflows.sandbox.query_values import (
    copy_value,
    is_doc,
    render,
    render_element,
    type_name,
    values_equal,
)
from backupflows.sandbox.update_arrays import (
    AddToSetNode,
    CullingNode,
    PopNode,
    PushNode,
    pull_all_matcher,
    pull_matcher,
)
from backupflows.sandbox.update_diff import compute_oplog_diff
from backupflows.sandbox.update_log import V2LogBuilder
from backupflows.sandbox.update_modifiers import (
    ArithmeticNode,
    CompareNode,
    ConflictPlaceholderNode,
    CurrentDateNode,
    SetNode,
    UnsetNode,
)
from backupflows.sandbox.update_rename import RenameNode
from backupflows.sandbox.update_tree import (
    ApplyContext,
    ObjectNode,
    UpdateNode,
    merge_path,
    parse_array_filters,
    root_ref,
)
from backupflows.sandbox.update_upsert import seed_document

__all__ = ["UpdateOutcome", "apply_update", "upsert_document"]

NOT_SINGLE_VALUE_FIELD = 54
INVALID_ID_FIELD = 53


@dataclass
class UpdateOutcome:
    new_doc: dict
    oplog_o: dict | None
    is_replacement: bool


def _leaf(op: str, path: str, value: Any) -> UpdateNode:
    if op in ("$set", "$setOnInsert"):
        return SetNode(value, insert_only=op == "$setOnInsert")
    if op == "$unset":
        return UnsetNode()
    if op in ("$inc", "$mul"):
        return ArithmeticNode(op, path, value)
    if op in ("$min", "$max"):
        return CompareNode(op, value)
    if op == "$push":
        return PushNode(value)
    if op == "$addToSet":
        return AddToSetNode(value)
    if op == "$pop":
        return PopNode(path, value)
    if op == "$pull":
        return CullingNode(pull_matcher(value))
    if op == "$pullAll":
        return CullingNode(pull_all_matcher(value))
    return CurrentDateNode(value)


_MODIFIERS = frozenset(("$set", "$setOnInsert", "$unset", "$inc", "$mul", "$min", "$max",
                        "$push", "$addToSet", "$pop", "$pull", "$pullAll", "$rename",
                        "$currentDate"))


def parse_operator_update(update: Mapping, filters: Mapping) -> tuple[ObjectNode, bool]:
    """UpdateDriver::parse for a modifier-style update: the tree and whether it
    uses the positional `$`."""
    root = ObjectNode()
    positional = False
    found: set[str] = set()
    for op, spec in update.items():
        if op not in _MODIFIERS:
            raise CommandError(FAILED_TO_PARSE, f"Unknown modifier: {op}. Expected a valid "
                               "update modifier or pipeline-style update specified as an "
                               "array")
        if not is_doc(spec):
            raise CommandError(FAILED_TO_PARSE, "Modifiers operate on fields but we found "
                               f"type {type_name(spec)} instead. For example: {{$mod: "
                               f"{{<field>: ...}}}} not {{{render_element(op, spec)}}}")
        for path, value in spec.items():
            positional |= _merge_one(root, op, path, value, filters, found)
    for ident in filters:
        if ident not in found:
            raise CommandError(FAILED_TO_PARSE, f"The array filter for identifier '{ident}' "
                               f"was not used in the update {render(update)}")
    return root, positional


def _merge_one(root: ObjectNode, op: str, path: str, value: Any, filters: Mapping,
               found: set[str]) -> bool:
    if op != "$rename":
        return merge_path(root, path, _leaf(op, path, value), filters, found)
    merge_path(root, path, ConflictPlaceholderNode(), filters, found)
    if not isinstance(value, str):
        raise CommandError(BAD_VALUE, "The 'to' field for $rename must be a string: "
                           f"{render_element(path, value)}")
    node = RenameNode(path, value)
    return merge_path(root, value, node, filters, found)


def _operator_update(doc: Mapping, update: Mapping, array_filters: list | None,
                     insert: bool, query: Mapping | None, clocks: dict) -> UpdateOutcome:
    filters = parse_array_filters(array_filters)
    tree, positional = parse_operator_update(update, filters)
    new_doc = copy_value(doc)
    matched = None
    if positional and query and not insert:
        matched = match_details(doc, query)[1]
    ctx = ApplyContext(doc=new_doc, insert=insert, matched_field=matched,
                       log=V2LogBuilder(), filters=filters, **clocks)
    noop = tree.apply(root_ref(new_doc), ctx)
    _validate_id(new_doc)
    if noop:
        return UpdateOutcome(new_doc, None, False)
    assert ctx.log is not None
    return UpdateOutcome(new_doc, ctx.log.serialize(), False)


def _validate_id(doc: Mapping) -> None:
    if "_id" in doc and isinstance(doc["_id"], list):
        raise CommandError(INVALID_ID_FIELD, "The '_id' value cannot be of type array")


def _replace(doc: Mapping, replacement: Mapping) -> dict | None:
    """ObjectReplaceExecutor::applyReplacementUpdate: the new document, or None
    for a no-op."""
    if bson.encode(doc) == bson.encode(replacement):
        return None
    new_doc: dict = {}
    if "_id" not in replacement and "_id" in doc:
        new_doc["_id"] = copy_value(doc["_id"])
    new_doc.update(copy_value(replacement))
    if "_id" in doc:
        if "_id" not in new_doc:
            raise CommandError(IMMUTABLE_FIELD, "After applying the update, the '_id' "
                               "(required and immutable) field was found to have been "
                               f"removed --{render(doc)}")
        if not values_equal(new_doc["_id"], doc["_id"]):
            raise CommandError(IMMUTABLE_FIELD, "After applying the update, the (immutable) "
                               "field '_id' was found to have been altered to "
                               f"{render_element('_id', new_doc['_id'])}")
    _validate_id(new_doc)
    return new_doc


def _check_replacement(replacement: Mapping) -> None:
    for name in replacement:
        if name.startswith("$"):
            raise CommandError(BAD_VALUE, f"The dollar ($) prefixed field '{name}' in "
                               f"'{name}' is not allowed in the context of an update's "
                               "replacement document. Consider using an aggregation "
                               "pipeline with $replaceWith.")


def _replacement_update(doc: Mapping, replacement: Mapping) -> UpdateOutcome:
    _check_replacement(replacement)
    new_doc = _replace(doc, replacement)
    if new_doc is None:
        return UpdateOutcome(copy_value(doc), None, True)
    return UpdateOutcome(new_doc, copy_value(new_doc), True)


def run_update_pipeline(doc: Mapping, pipeline: list) -> dict:
    """The document a pipeline-style update produces from ``doc``."""
    stages = []
    for stage in pipeline:
        name = stage_name(stage)
        if name not in UPDATE_STAGES:
            raise CommandError(INVALID_OPTIONS, f"{name} is not allowed to be used within "
                               "an update")
        stages.append(compile_stage(stage))
    current = [copy_value(doc)]
    for run in stages:
        current = run(current)
    return current[0]


def _pipeline_update(doc: Mapping, pipeline: list, array_filters: list | None) -> UpdateOutcome:
    if array_filters:
        raise CommandError(FAILED_TO_PARSE, "arrayFilters may not be specified for "
                           "pipeline-style updates")
    transformed = run_update_pipeline(doc, pipeline)
    new_doc = _replace(doc, transformed)
    if new_doc is None:
        return UpdateOutcome(copy_value(doc), None, False)
    diff = compute_oplog_diff(doc, new_doc)
    if diff is None:
        return UpdateOutcome(new_doc, copy_value(new_doc), True)
    return UpdateOutcome(new_doc, {"$v": 2, "diff": diff}, False)


def apply_update(doc: Mapping, update: Mapping | list, *, array_filters: list | None = None,
                 upsert_insert: bool = False, query: Mapping | None = None,
                 now: Callable[[], Any] | None = None,
                 cluster_time: Callable[[], Any] | None = None) -> UpdateOutcome:
    """Apply ``update`` to a copy of ``doc`` (which is never mutated)."""
    if isinstance(update, list):
        return _pipeline_update(doc, update, array_filters)
    if not is_doc(update):
        raise CommandError(FAILED_TO_PARSE, "Update argument must be either an object or an "
                           "array")
    if not update or not next(iter(update)).startswith("$"):
        return _replacement_update(doc, update)
    clocks = {"now": now, "cluster_time": cluster_time}
    return _operator_update(doc, update, array_filters, upsert_insert, query, clocks)


def upsert_document(filter: Mapping, update: Mapping | list, *,  # noqa: A002 - server name
                    array_filters: list | None = None, now: Callable[[], Any] | None = None,
                    cluster_time: Callable[[], Any] | None = None) -> dict:
    """The document an upsert inserts when ``filter`` matched nothing."""
    replacement = is_doc(update) and (not update or not next(iter(update)).startswith("$"))
    doc = seed_document(filter or {}, only_id=replacement)
    if replacement:
        _check_replacement(update)  # type: ignore[arg-type]
        new_doc = _replace(doc, update) or doc  # type: ignore[arg-type]
    elif isinstance(update, list):
        if array_filters:
            raise CommandError(FAILED_TO_PARSE, "arrayFilters may not be specified for "
                               "pipeline-style updates")
        new_doc = _replace(doc, run_update_pipeline(doc, update)) or doc
    else:
        new_doc = apply_update(doc, update, array_filters=array_filters, upsert_insert=True,
                               now=now, cluster_time=cluster_time).new_doc
    return _id_first(new_doc)


def _id_first(doc: dict) -> dict:
    """ensureIdFieldIsFirst(doc, generateOIDIfMissing=true)."""
    if "_id" not in doc:
        return {"_id": ObjectId(), **doc}
    if next(iter(doc)) == "_id":
        return doc
    return {"_id": doc["_id"], **{k: v for k, v in doc.items() if k != "_id"}}
