"""Command dispatch: from a decoded request to the encoded reply body.

Handlers live in the ``commands_*`` modules and register themselves with
``@command``. Every reply carries ``ok`` plus the ``$clusterTime`` and
``operationTime`` a replica-set member gossips (the last oplog timestamp);
errors are ``{ok: 0, errmsg, code, codeName}`` (+ ``errorLabels``). Session
fields are resolved here: ``autocommit: false`` puts the command inside its
transaction, a ``txnNumber`` on a write outside one makes it a retryable write.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bson.binary import Binary
from bson.int64 import Int64
from bson.timestamp import Timestamp

from backupflows.bsonorder import KeyError_
from backupflows.sandbox import wire
from backupflows.sandbox.errors import BAD_VALUE, COMMAND_NOT_FOUND, CommandError
from backupflows.sandbox.oplog import ts_parts
from backupflows.sandbox.store import PLAIN, Store, WriteContext

if TYPE_CHECKING:
    from backupflows.sandbox.server import Connection, SandboxServer

# NotPrimaryError and ShutdownError categories: the server adds its
# topologyVersion to these errors, so drivers can tell a stale error (same
# topologyVersion) from a real state change (SDAM spec).
STATE_CHANGE_CODES = {10107, 13435, 13436, 11600, 11602, 189, 91}
log = logging.getLogger(__name__)
RETRYABLE_CODES = {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150,
                   134}
TXN_FINISHERS = ("commitTransaction", "abortTransaction")


@dataclass
class Ctx:
    """One command being executed."""

    server: SandboxServer
    conn: Connection
    db: str
    cmd: dict
    name: str
    sequences: dict[str, list[bytes]] = field(default_factory=dict)
    write: WriteContext = field(default_factory=WriteContext)
    after: list[Callable[[], None]] = field(default_factory=list)
    raw_body: bytes = b""

    @property
    def store(self) -> Store:
        return self.server.store

    def arg(self, name: str, default: Any = None) -> Any:
        return self.cmd.get(name, default)

    def documents(self, name: str) -> list[bytes]:
        """A document list argument as raw BSON (kind-1 sequence or body array)."""
        if name in self.sequences:
            return self.sequences[name]
        values = self.cmd.get(name)
        if values is None:
            return []
        if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
            raise CommandError(14, f"BSON field '{self.name}.{name}' is the wrong type",
                               "TypeMismatch")
        raw = wire.raw_array_documents(self.raw_body, name) if self.raw_body else None
        if raw is not None and len(raw) == len(values):
            return raw
        from backupflows.sandbox.storage import encode
        return [encode(v) for v in values]

    def doc_list(self, name: str) -> list[dict]:
        if name in self.sequences:
            from backupflows.sandbox.storage import decode
            return [decode(raw) for raw in self.sequences[name]]
        values = self.cmd.get(name) or []
        if not isinstance(values, list):
            raise CommandError(14, f"BSON field '{self.name}.{name}' is the wrong type",
                               "TypeMismatch")
        return values


@dataclass
class Command:
    fn: Callable[[Ctx], Any]
    locked: bool = True
    write: bool = False


COMMANDS: dict[str, Command] = {}


def command(*names: str, locked: bool = True, write: bool = False) -> Callable:
    def register(fn: Callable[[Ctx], Any]) -> Callable[[Ctx], Any]:
        for name in names:
            COMMANDS[name] = Command(fn, locked, write)
        return fn
    return register


class RawReply:
    """A reply whose elements are already encoded (cursor batches)."""

    def __init__(self, elements: bytes) -> None:
        self.elements = elements


def cluster_time_elements(store: Store) -> bytes:
    ts = Timestamp(*ts_parts(store.oplog.last_ts))
    return wire.elements({"$clusterTime": {"clusterTime": ts,
                                           "signature": {"hash": Binary(b"\x00" * 20, 0),
                                                         "keyId": Int64(0)}},
                          "operationTime": ts})


_OK = wire.elements({"ok": 1.0})


def success_reply(store: Store, result: Any) -> bytes:
    if isinstance(result, RawReply):
        return wire.doc_from_elements(result.elements, _OK, cluster_time_elements(store))
    result = dict(result or {})
    result.setdefault("ok", 1.0)
    return wire.doc_from_elements(wire.elements(result), cluster_time_elements(store))


def error_reply(store: Store, err: CommandError, topology_version: dict | None = None
                ) -> bytes:
    doc = err.to_reply()
    doc.update(getattr(err, "details", None) or {})
    labels = getattr(err, "labels", None)
    if labels:
        doc["errorLabels"] = list(labels)
    if topology_version is not None and err.code in STATE_CHANGE_CODES:
        doc["topologyVersion"] = topology_version
    return wire.doc_from_elements(wire.elements(doc), cluster_time_elements(store))


def _session_context(ctx: Ctx, spec: Command) -> WriteContext:
    cmd, store = ctx.cmd, ctx.store
    lsid = cmd.get("lsid")
    lsid_id = lsid.get("id") if isinstance(lsid, dict) else None
    txn_number = cmd.get("txnNumber")
    if cmd.get("autocommit") is False:
        if not isinstance(lsid_id, uuidlib.UUID) or txn_number is None:
            raise CommandError(BAD_VALUE, "'autocommit' requires a session and a txnNumber")
        if ctx.name in TXN_FINISHERS:
            return WriteContext(lsid_id, int(txn_number))
        if cmd.get("startTransaction"):
            txn = store.sessions.start(lsid_id, int(txn_number))
        else:
            txn = store.sessions.active(lsid_id, int(txn_number))
        return WriteContext(lsid_id, int(txn_number), txn=txn)
    if txn_number is not None and spec.write and isinstance(lsid_id, uuidlib.UUID):
        retry = store.sessions.retry_state(lsid_id, int(txn_number))
        return WriteContext(lsid_id, int(txn_number), retry=retry)
    return PLAIN


def _run_locked(ctx: Ctx, spec: Command) -> Any:
    store = ctx.store
    with store.lock:
        ctx.write = _session_context(ctx, spec)
        txn = ctx.write.txn
        try:
            result = spec.fn(ctx)
        except Exception as exc:
            err = _as_command_error(exc)
            if txn is not None and txn.state == "in progress":
                store.sessions.rollback(txn)
                err.labels = ["TransientTransactionError"]
            raise err from None
        if txn is not None and isinstance(result, dict) and result.get("writeErrors"):
            store.sessions.rollback(txn)
        return result


def _as_command_error(exc: Exception) -> CommandError:
    """Any failure inside a handler becomes an error reply, never a dropped
    connection: bad BSON values are BadValue, the rest InternalError (logged)."""
    if isinstance(exc, CommandError):
        return exc
    if isinstance(exc, KeyError_):
        return CommandError(BAD_VALUE, f"invalid BSON value: {exc}")
    log.exception("command failed unexpectedly")
    return CommandError(1, f"internal error in the sandbox: {exc!r}", "InternalError")


def run(ctx: Ctx) -> bytes:
    """Execute one command; always returns a reply body (errors included)."""
    store = ctx.store
    spec = COMMANDS.get(ctx.name)
    try:
        if spec is None:
            raise CommandError(COMMAND_NOT_FOUND, f"no such command: '{ctx.name}'")
        store.opcounters["command"] += 1
        try:
            result = _run_locked(ctx, spec) if spec.locked else spec.fn(ctx)
            return success_reply(store, result)
        except Exception as exc:
            raise _as_command_error(exc) from None
    except CommandError as err:
        if (ctx.write.retry is not None or ctx.name in TXN_FINISHERS) \
                and err.code in RETRYABLE_CODES:
            err.labels = list(getattr(err, "labels", None) or []) + ["RetryableWriteError"]
        return error_reply(store, err, ctx.server.topology_version())


def load_handlers() -> None:
    """Import the modules that register handlers (idempotent)."""
    from backupflows.sandbox import (  # noqa: F401
        commands_admin,
        commands_crud,
        commands_ddl,
        commands_find,
        commands_list,
    )
