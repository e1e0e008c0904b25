"""Document-level update logic for ``op: u`` oplog entries.

``classify`` tells the three shapes of ``o`` apart (``shared/reference/oplog.md``,
"Updates"); ``apply_delta`` (``$v: 2``), ``apply_modifiers`` (``$set``/``$unset``)
and ``apply_replacement`` turn a raw BSON document into its post-image, byte
exact (``apply_delta`` through the C codec where that is lossless, see
``deltadict``; the others, and its fallback, by walking the raw bytes);
``apply_update`` dispatches on the shape.  Finding the target
document (by ``o2._id``) and the idempotency rules are the applier's work.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from backupflows.oplog.delta import apply_delta, validate_delta
from backupflows.oplog.modifiers import apply_modifiers
from backupflows.oplog.rawdoc import (
    BSON_ERRORS,
    InvalidUpdate,
    check_document,
    document,
    elements,
    raw_of,
)

__all__ = [
    "InvalidUpdate", "UpdateKind", "classify", "apply_update", "apply_delta",
    "validate_delta", "apply_modifiers", "apply_replacement",
]

UpdateKind = Literal["delta", "modifier", "replacement"]


def classify(o: Mapping[str, Any]) -> UpdateKind:
    """The shape of an update's ``o``: ``delta`` if ``o.$v == 2``, else
    ``modifier`` if its first field name starts with ``$``, else
    ``replacement`` (the whole new document)."""
    version = o.get("$v")
    if version is not None and not isinstance(version, bool) and version == 2:
        return "delta"
    for name in o:
        return "modifier" if name.startswith("$") else "replacement"
    return "replacement"


def apply_update(raw_doc: bytes, o: Mapping[str, Any]) -> bytes:
    """Apply an update's ``o`` of any shape to the raw document ``raw_doc``."""
    kind = classify(o)
    if kind == "delta":
        diff = o.get("diff")
        if not isinstance(diff, Mapping):
            raise InvalidUpdate("a $v: 2 update needs a document 'diff'")
        return apply_delta(raw_doc, diff)
    if kind == "modifier":
        version = o.get("$v")
        if version is not None and (isinstance(version, bool) or version != 1):
            raise InvalidUpdate(f"unsupported update version $v: {version!r}")
        return apply_modifiers(raw_doc, o)
    return apply_replacement(raw_doc, o)


def _id_element(raw: bytes) -> bytes | None:
    for _t, pos, name_end, value_end in elements(raw):
        if raw[pos + 1:name_end] == b"_id":
            return raw[pos:value_end]
    return None


def apply_replacement(raw_doc: bytes | None, o_raw: bytes | Mapping[str, Any]) -> bytes:
    """The document that replaces ``raw_doc`` (None if there is none): the
    ``_id`` of ``raw_doc`` (else of ``o``) first, then the other fields of
    ``o`` in their order."""
    o_bytes = raw_of(o_raw)
    check_document(o_bytes, "replacement")
    try:
        id_element = None
        if raw_doc is not None:
            check_document(raw_doc)
            id_element = _id_element(raw_doc)
        if id_element is None:
            id_element = _id_element(o_bytes)
        if id_element is None:
            raise InvalidUpdate("replacement has no _id and there is no document to take it from")
        rest = [o_bytes[pos:end] for _t, pos, name_end, end in elements(o_bytes)
                if o_bytes[pos + 1:name_end] != b"_id"]
    except BSON_ERRORS as exc:
        raise InvalidUpdate(f"document or replacement is not valid BSON: {exc}") from None
    return document([id_element, *rest])
