"""Logical sessions: retryable writes and multi-document transactions.

Retryable writes (a write command carrying ``lsid`` + ``txnNumber`` outside a
transaction) write ``lsid``, ``txnNumber``, ``stmtId`` and ``prevOpTime`` into
their oplog entries, chained per (session, txnNumber) as the server's
``appendOplogEntryChainInfo`` does; a statement already executed for the
session's current ``txnNumber`` is not executed again when a driver retries it.

A transaction (``startTransaction``/``autocommit: false``) applies its writes to
the collections at once, so its own reads see them, and keeps an undo log and
the list of its operations; ``commitTransaction`` writes ONE ``applyOps`` entry
on ``admin.$cmd`` with ``lsid``, ``txnNumber`` and the null ``prevOpTime``
(Timestamp(0, 0), t: -1) like a 7.0 primary for a transaction that fits in one
entry; ``abortTransaction`` rolls the writes back and writes nothing.
Limits (see the report): no snapshot isolation (other sessions see a running
transaction's writes), no write-conflict detection, no ``partialTxn`` chains
for transactions over 16 MB, no prepared transactions. A transaction still open
after 60 s (transactionLifetimeLimitSeconds) is aborted and rolled back.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backupflows.sandbox.errors import NO_SUCH_TRANSACTION, CommandError

TRANSIENT = ["TransientTransactionError"]
TRANSACTION_LIFETIME_S = 60.0  # transactionLifetimeLimitSeconds


@dataclass
class Transaction:
    lsid_id: uuidlib.UUID
    txn_number: int
    ops: list[bytes] = field(default_factory=list)       # applyOps inner operations
    undo: list[Callable[[], None]] = field(default_factory=list)
    state: str = "in progress"   # -> committed | aborted
    started: float = field(default_factory=time.monotonic)


@dataclass
class RetryState:
    """What one session did under its latest txnNumber."""

    txn_number: int
    last_ts: int = 0
    results: dict[int, Any] = field(default_factory=dict)   # stmtId -> statement result


def no_such_transaction(txn_number: int, what: str = "") -> CommandError:
    err = CommandError(NO_SUCH_TRANSACTION,
                       f"Transaction with {{ txnNumber: {txn_number} }} has been aborted."
                       if what == "aborted" else
                       f"Given transaction number {txn_number} does not match any "
                       f"in-progress transactions.")
    err.labels = TRANSIENT
    return err


class Sessions:
    """Transactions and retryable-write state of every session."""

    def __init__(self) -> None:
        self.txns: dict[uuidlib.UUID, Transaction] = {}
        self.retry: dict[uuidlib.UUID, RetryState] = {}

    # -- transactions ------------------------------------------------------
    def start(self, lsid_id: uuidlib.UUID, txn_number: int) -> Transaction:
        current = self.txns.get(lsid_id)
        if current is not None and current.txn_number >= txn_number:
            raise CommandError(225, f"Cannot start transaction {txn_number} on session "
                               f"{lsid_id} because a newer transaction "
                               f"{current.txn_number} has already started.",
                               "TransactionTooOld")
        if current is not None and current.state == "in progress":
            self.rollback(current)
        txn = Transaction(lsid_id, txn_number)
        self.txns[lsid_id] = txn
        return txn

    def active(self, lsid_id: uuidlib.UUID, txn_number: int) -> Transaction:
        txn = self.txns.get(lsid_id)
        if txn is None or txn.txn_number != txn_number:
            raise no_such_transaction(txn_number)
        if txn.state == "aborted":
            raise no_such_transaction(txn_number, "aborted")
        if txn.state == "committed":
            raise CommandError(256, f"Transaction {txn_number} has been committed.",
                               "TransactionCommitted")
        return txn

    def find(self, lsid_id: uuidlib.UUID, txn_number: int) -> Transaction:
        txn = self.txns.get(lsid_id)
        if txn is None or txn.txn_number != txn_number:
            raise no_such_transaction(txn_number)
        return txn

    @staticmethod
    def rollback(txn: Transaction) -> None:
        for undo in reversed(txn.undo):
            undo()
        txn.undo.clear()
        txn.ops.clear()
        txn.state = "aborted"

    def end(self, lsid_id: uuidlib.UUID) -> None:
        txn = self.txns.pop(lsid_id, None)
        if txn is not None and txn.state == "in progress":
            self.rollback(txn)
        self.retry.pop(lsid_id, None)

    def reap(self, now: float | None = None) -> int:
        """Abort transactions older than the lifetime limit, as the server does."""
        now = time.monotonic() if now is None else now
        expired = [t for t in self.txns.values() if t.state == "in progress"
                   and now - t.started > TRANSACTION_LIFETIME_S]
        for txn in expired:
            self.rollback(txn)
        return len(expired)

    def abort_all(self) -> None:
        for lsid_id in list(self.txns):
            self.end(lsid_id)

    # -- retryable writes --------------------------------------------------
    def retry_state(self, lsid_id: uuidlib.UUID, txn_number: int) -> RetryState:
        state = self.retry.get(lsid_id)
        if state is not None and txn_number < state.txn_number:
            raise CommandError(225, f"Retryable write with txnNumber {txn_number} is prohibited"
                               f" on session {lsid_id} because a newer retryable write with "
                               f"txnNumber {state.txn_number} has already started on this "
                               f"session.", "TransactionTooOld")
        if state is None or txn_number > state.txn_number:
            state = RetryState(txn_number)
            self.retry[lsid_id] = state
        return state
