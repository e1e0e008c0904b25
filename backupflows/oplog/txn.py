"""applyOps in all its forms, and transactions.

- ``applyOps`` without a session, or with one but neither ``partialTxn`` nor
  ``prepare`` (a committed unprepared transaction, a retryable vectored
  insert ``multiOpType: 1``): the inner ops are applied at once, in order.
- ``partialTxn: true``: part of a large transaction. The raw entry is stored
  in the head (``txn_entries``, same SQLite transaction as the optime), so a
  chain split across batches, or across a crash, survives; the stored parts
  are applied, in ``ts`` order, when the final ``applyOps`` of the same
  ``lsid``/``txnNumber`` (no ``partialTxn``, with ``count``) arrives.
- ``prepare: true``: stored with the chain until ``commitTransaction``
  (applied) or ``abortTransaction`` (dropped) for the same session.

Inner ops keep their own fields; their position is the outer entry's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from backupflows.head import rawdoc
from backupflows.oplog.entry import Entry, parse

if TYPE_CHECKING:
    from backupflows.oplog.applier import Context


def _ops(e: Entry, o_raw: bytes) -> bytes:
    found = rawdoc.field(o_raw, b"applyOps")
    if found is None or found[0] != 0x04:
        raise e.error("'applyOps' must be an array of operations")
    return o_raw[found[1]:found[2]]


def _apply_inner(ctx: Context, e: Entry, ops: bytes) -> None:
    for t, op_raw in rawdoc.array_items(ops):
        if t != 0x03:
            raise e.error("applyOps holds a value that is not an operation document")
        ctx.apply(parse(op_raw, outer=e))


def apply_ops(ctx: Context, e: Entry, o_raw: bytes) -> None:
    ops = _ops(e, o_raw)
    key = e.txn_key()
    if key is None:
        _apply_inner(ctx, e, ops)
        return
    if rawdoc.value(o_raw, b"partialTxn") is True or rawdoc.value(o_raw, b"prepare") is True:
        ctx.w.txn_save(key, e.ts or 0, e.raw)
        return
    _apply_chain(ctx, key)
    _apply_inner(ctx, e, ops)


def _apply_chain(ctx: Context, key: bytes) -> None:
    """Apply and forget the stored parts of transaction ``key``."""
    for raw in ctx.w.txn_entries(key):
        part = parse(raw)
        _apply_inner(ctx, part, _ops(part, part.o()))
    ctx.w.txn_clear(key)


def commit_transaction(ctx: Context, e: Entry, o_raw: bytes) -> None:
    key = e.txn_key()
    if key is None:
        raise e.error("commitTransaction without lsid/txnNumber")
    _apply_chain(ctx, key)


def abort_transaction(ctx: Context, e: Entry, o_raw: bytes) -> None:
    key = e.txn_key()
    if key is None:
        raise e.error("abortTransaction without lsid/txnNumber")
    ctx.w.txn_clear(key)
