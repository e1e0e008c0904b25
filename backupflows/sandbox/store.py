"""The sandbox's state and every write path that touches the oplog.

``Store`` owns the catalog, the oplog, cursors and sessions, and the one lock
that serialises commands (``cond``, on that lock, is notified on every oplog
append so awaiting tailable cursors wake up at once). The write helpers here
are the only code that changes documents or collections: each applies the
change, records an undo step when inside a transaction, and writes the oplog
entry (or, inside a transaction, the ``applyOps`` inner operation) exactly as
the server's ``OpObserverImpl`` does.
"""

from __future__ import annotations

import threading
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from bson.int64 import Int64

from backupflows.bsonorder import raw_id
from backupflows.sandbox import options as opts
from backupflows.sandbox.cursors import CursorRegistry
from backupflows.sandbox.errors import INVALID_NAMESPACE, CommandError
from backupflows.sandbox.indexes import ID_INDEX
from backupflows.sandbox.oplog import Oplog, SessionInfo, operation_elements
from backupflows.sandbox.sessions import RetryState, Sessions, Transaction
from backupflows.sandbox.storage import Catalog, Collection, encode
from backupflows.sandbox.wire import doc_from_elements, element

ILLEGAL_OPERATION = 20
UNREPLICATED_DBS = ("local",)


@dataclass
class WriteContext:
    """Who is writing: plain, retryable write, or inside a transaction."""

    lsid_id: uuidlib.UUID | None = None
    txn_number: int | None = None
    txn: Transaction | None = None
    retry: RetryState | None = None

    def session_info(self, stmt_id: int | None) -> SessionInfo | None:
        if self.retry is None or self.lsid_id is None or self.txn_number is None:
            return None
        return SessionInfo(self.lsid_id, self.txn_number, stmt_id, self.retry.last_ts)


PLAIN = WriteContext()


def check_db_name(db: str) -> None:
    if not db or any(c in db for c in '/\\. "$\x00') or len(db) >= 64:
        raise CommandError(INVALID_NAMESPACE, f"Invalid database name: '{db}'")


def check_coll_name(db: str, name: str) -> None:
    check_db_name(db)
    if not name or "$" in name or "\x00" in name or name.startswith("."):
        raise CommandError(INVALID_NAMESPACE, f"Invalid collection name: {db}.{name}")


class Store:
    """All databases, the oplog, cursors, sessions, and the lock over them."""

    def __init__(self, oplog_size_bytes: int) -> None:
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.catalog = Catalog()
        self.oplog = Oplog(oplog_size_bytes, on_append=self.cond.notify_all)
        self.catalog.add(self.oplog.coll)
        self.cursors = CursorRegistry()
        self.sessions = Sessions()
        self.opcounters = dict.fromkeys(
            ("insert", "query", "update", "delete", "getmore", "command"), 0)
        with self.lock:
            self._bootstrap()

    def _bootstrap(self) -> None:
        """What a freshly initiated replica set holds (written before the oplog starts)."""
        version = self.catalog.add(Collection("admin", "system.version"))
        version.insert(encode({"_id": "featureCompatibilityVersion", "version": "7.0"}))
        sessions = self.catalog.add(Collection("config", "system.sessions"))
        sessions.add_index({"v": 2, "key": {"lastUse": 1}, "name": "lsidTTLIndex",
                            "expireAfterSeconds": 1800})
        self.catalog.add(Collection("local", "system.replset"))
        self.oplog.noop("initiating set")

    # -- oplog -------------------------------------------------------------
    def log_crud(self, ctx: WriteContext, op: str, coll: Collection, o: bytes,
                 o2: bytes | None = None, stmt_id: int | None = None,
                 extra: bytes = b"") -> None:
        if coll.db in UNREPLICATED_DBS:
            return
        if ctx.txn is not None:
            ctx.txn.ops.append(doc_from_elements(
                operation_elements(op, coll.ns, o, coll.uuid, o2)))
            return
        ts = self.oplog.log(op, coll.ns, o, ui=coll.uuid, o2=o2,
                            session=ctx.session_info(stmt_id), extra=extra)
        if ctx.retry is not None:
            ctx.retry.last_ts = ts

    def log_command(self, ctx: WriteContext, db: str, o: dict, ui: uuidlib.UUID | None = None,
                    o2: dict | None = None) -> None:
        if db in UNREPLICATED_DBS:
            return
        o_raw, o2_raw = encode(o), None if o2 is None else encode(o2)
        if ctx.txn is not None:
            ctx.txn.ops.append(doc_from_elements(
                operation_elements("c", f"{db}.$cmd", o_raw, ui, o2_raw)))
            return
        self.oplog.log("c", f"{db}.$cmd", o_raw, ui=ui, o2=o2_raw)

    def commit(self, txn: Transaction) -> None:
        """Write the transaction's single applyOps entry (nothing if it wrote nothing)."""
        if txn.ops:
            ops = element("applyOps", 0x04, doc_from_elements(*(
                b"\x03" + str(i).encode() + b"\x00" + op for i, op in enumerate(txn.ops))))
            self.oplog.log("c", "admin.$cmd", doc_from_elements(ops),
                           session=SessionInfo(txn.lsid_id, txn.txn_number, None, 0))
        txn.state = "committed"
        txn.undo.clear()

    # -- collections -------------------------------------------------------
    def create_collection(self, ctx: WriteContext, db: str, name: str,
                          options: dict | None = None) -> Collection:
        """Create ``db.name`` and log ``create`` with its options and idIndex."""
        check_coll_name(db, name)
        normalized = opts.normalize(options or {})
        if self.catalog.get(db, name) is not None or self.catalog.view(db, name):
            raise CommandError(48, f"Collection {db}.{name} already exists.", "NamespaceExists")
        coll = self.catalog.add(Collection(db, name, normalized))
        self._undo(ctx, lambda: self._forget(coll))
        self.log_command(ctx, db, {"create": name, **normalized, "idIndex": dict(ID_INDEX)},
                         ui=coll.uuid)
        return coll

    def ensure_collection(self, ctx: WriteContext, db: str, name: str) -> tuple[Collection, bool]:
        coll = self.catalog.get(db, name)
        if coll is not None:
            return coll, False
        if self.catalog.view(db, name):
            raise CommandError(166, f"Namespace {db}.{name} is a view, not a collection",
                               "CommandNotSupportedOnView")
        return self.create_collection(ctx, db, name), True

    def _forget(self, coll: Collection) -> None:
        if self.catalog.get(coll.db, coll.name) is coll:
            self.catalog.remove(coll.db, coll.name)

    def drop_collection(self, ctx: WriteContext, coll: Collection) -> None:
        """Drop a collection: one ``drop`` entry with ``o2.numRecords``."""
        self.catalog.remove(coll.db, coll.name)
        self.cursors.kill_for_collection(coll)
        self.log_command(ctx, coll.db, {"drop": coll.name}, ui=coll.uuid,
                         o2={"numRecords": _number(len(coll))})

    # -- documents ---------------------------------------------------------
    def insert(self, ctx: WriteContext, coll: Collection, raw: bytes,
               stmt_id: int | None = None, doc: dict | None = None) -> None:
        rid = coll.insert(raw, doc)
        self._undo(ctx, lambda: coll.delete(rid))
        self.log_crud(ctx, "i", coll, raw, raw_id(raw), stmt_id)
        if coll.capped:
            coll.enforce_cap()
        self.opcounters["insert"] += 1
        self.cond.notify_all()

    def update(self, ctx: WriteContext, coll: Collection, rid: int, new_raw: bytes,
               oplog_o: Any, stmt_id: int | None = None, extra: bytes = b"",
               old_doc: dict | None = None, new_doc: dict | None = None) -> None:
        old_raw = coll.records[rid]
        coll.replace(rid, new_raw, old_doc, new_doc)
        self._undo(ctx, lambda: coll.replace(rid, old_raw))
        o = oplog_o if isinstance(oplog_o, bytes) else encode(oplog_o)
        self.log_crud(ctx, "u", coll, o, raw_id(new_raw), stmt_id, extra)
        self.opcounters["update"] += 1

    def delete(self, ctx: WriteContext, coll: Collection, rid: int,
               stmt_id: int | None = None, extra: bytes = b"") -> bytes:
        raw = coll.delete(rid)
        self._undo(ctx, lambda: coll.restore(rid, raw))
        self.log_crud(ctx, "d", coll, raw_id(raw), None, stmt_id, extra)
        self.opcounters["delete"] += 1
        return raw

    @staticmethod
    def _undo(ctx: WriteContext, step: Any) -> None:
        if ctx.txn is not None:
            ctx.txn.undo.append(step)

    # -- views ---------------------------------------------------------------
    def create_view(self, ctx: WriteContext, db: str, name: str, view_on: str,
                    pipeline: list, collation: dict | None) -> None:
        """Views live in ``db.system.views``: the server logs an insert there."""
        check_coll_name(db, name)
        if self.catalog.get(db, name) is not None or self.catalog.view(db, name):
            raise CommandError(48, f"Collection {db}.{name} already exists.", "NamespaceExists")
        views, _ = self.ensure_collection(ctx, db, "system.views")
        doc: dict[str, Any] = {"_id": f"{db}.{name}", "viewOn": view_on, "pipeline": pipeline}
        if collation:
            doc["collation"] = collation
        self.insert(ctx, views, encode(doc))


def _number(n: int) -> Any:
    """``BSONObjBuilder::appendNumber(long long)``: Int32 when it fits."""
    return n if -(1 << 30) < n < (1 << 30) else Int64(n)

