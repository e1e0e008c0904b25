"""Views and time-series views.

The server keeps view definitions as documents of ``<db>.system.views``
(``{_id: "db.view", viewOn, pipeline, collation?}``) and replicates them as
ordinary inserts, updates and deletes of that collection (and, when created
by command, as ``create`` with ``viewOn``). The head keeps one catalog row per
view (type ``view``, or ``timeseries`` when it is the view over
``system.buckets.<name>``) whose options are the definition without ``_id``:
both forms of the oplog land on the same row, idempotently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bson.raw_bson import RawBSONDocument

from backupflows.head import rawdoc
from backupflows.head.catalog import COLLECTION, TIMESERIES, VIEW
from backupflows.head.store import create_collection
from backupflows.oplog import crud
from backupflows.oplog import update as upd
from backupflows.oplog.entry import Entry

if TYPE_CHECKING:
    from backupflows.head.writer import HeadWriter


def view_type(name: str, options: bytes) -> str:
    return TIMESERIES if rawdoc.value(options, b"viewOn") == f"system.buckets.{name}" else VIEW


def create_view(w: HeadWriter, db: str, name: str, options: bytes) -> None:
    """Create (or, if it exists, redefine) the view ``db.name``."""
    existing = w.catalog.get(db, name)
    if existing is not None and existing.holds_documents:
        crud.displace(w, existing)
        existing = None
    if existing is None:
        create_collection(w, db, name, None, view_type(name, options), options, [])
    elif existing.options != options:
        w.catalog.set_options(existing, options)


def create_timeseries(w: HeadWriter, db: str, name: str, ui: bytes | None,
                      options: bytes) -> None:
    """A user-form time-series create: the buckets collection and its view."""
    buckets = f"system.buckets.{name}"
    if w.catalog.get(db, buckets) is None:
        create_collection(w, db, buckets, ui, COLLECTION, options, [])
    view = rawdoc.build([rawdoc.element("viewOn", buckets), rawdoc.element("pipeline", [])])
    create_view(w, db, name, view)


def drop_all(w: HeadWriter, db: str) -> None:
    for c in w.catalog.in_db(db):
        if not c.holds_documents:
            crud.drop(w, c)


def _view_name(e: Entry, raw_id_doc: bytes) -> str | None:
    full = rawdoc.value(raw_id_doc, b"_id")
    if not isinstance(full, str) or not full.startswith(e.db + "."):
        raise e.error(f"system.views document needs _id '<db>.<view>', got {full!r}")
    return full[len(e.db) + 1:]


def apply_crud(w: HeadWriter, e: Entry) -> None:
    """Apply an insert, update or delete of ``<db>.system.views``."""
    if e.op == "i":
        doc = e.o()
        name = _view_name(e, doc)
        if name:
            create_view(w, e.db, name, rawdoc.without(doc, (b"_id",)))
        return
    name = _view_name(e, e.o2() if e.op == "u" else e.o())  # type: ignore[arg-type]
    c = w.catalog.get(e.db, name or "")
    if c is None or c.holds_documents:
        return
    if e.op == "d":
        crud.drop(w, c)
        return
    ident = rawdoc.element("_id", f"{e.db}.{name}")
    current = rawdoc.build([ident] + [v for _, v in rawdoc.elements_of(c.options)])
    e.key = crud.entry_key(e)
    new = crud.updated(e, current, e.o(), _kind(e))
    create_view(w, e.db, name or "", rawdoc.without(new, (b"_id",)))


def _kind(e: Entry) -> str:
    return upd.classify(RawBSONDocument(e.o()))
