"""WAL checkpoints of the head in a background thread.

A checkpoint copies the pages the write-ahead log holds back into the
database file and fsyncs it: on a busy disk the fsync alone can take longer
than applying a batch. Run by the writer itself (SQLite's auto-checkpoint at
commit), it stalls the applier; run here, on its own connection, it overlaps
with the applier's work (the thread spends its time waiting on the disk, not
on the CPU, and sqlite3 releases the GIL while it does).

After each write transaction the store calls ``poke``; the thread runs a
PASSIVE checkpoint (never blocks the writer or readers) unless one is
already running. When every frame is copied the next write transaction
restarts the log from its beginning, so the WAL stays about one batch long.

If the thread cannot keep up (a disk slower than the applier): the writer's
own auto-checkpoint stays on as before (``schema.WAL_CHECKPOINT_BYTES``; it
gives way, without waiting, while this thread checkpoints), and past
``CATCH_UP_BYTES`` of log the store waits for the running checkpoint and runs
one itself (``catch_up``), so a slow disk slows the applier down instead of
letting the log grow. Nothing here waits for readers: frames a long-lived
reader still needs stay in the log until it ends, as with SQLite's own
checkpoints.

Durability is SQLite's: a checkpoint only copies frames of committed
transactions, and a crash during one is repaired from the WAL at the next
open.
"""

from __future__ import annotations

import sqlite3
import threading

CATCH_UP_BYTES = 256 << 20
IDLE_SECONDS = 30.0  # the thread (and its connection) ends after this long without work


class Checkpointer:
    """The background checkpoint thread of one head database (started on
    demand, ended after ``IDLE_SECONDS`` without a poke or by ``close``)."""

    def __init__(self, path: str, page_size: int) -> None:
        self.path = path
        self.page_size = page_size
        self.log_bytes = 0  # WAL size seen by the last checkpoint
        self.checkpoints = 0
        self.error: BaseException | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one checkpoint at a time: thread or writer
        self._stopping = False
        self._thread: threading.Thread | None = None

    def poke(self) -> None:
        """New frames were committed: checkpoint them soon (called by the
        store's single writer)."""
        self._wake.set()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="head-checkpoint",
                                            daemon=True)
            self._thread.start()

    def catch_up(self, writer: sqlite3.Connection) -> None:
        """If the log is past ``CATCH_UP_BYTES``: wait for the thread's
        checkpoint, then checkpoint on the writer's connection."""
        if self.log_bytes > CATCH_UP_BYTES:
            self._checkpoint(writer)  # takes the lock: waits for the thread's one

    def close(self) -> None:
        """Stop the thread (after the checkpoint it may be running)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=60,
                                   check_same_thread=False)
        except sqlite3.Error as exc:  # the writer's auto-checkpoint still runs
            self.error = exc
            return
        try:
            while self._wake.wait(IDLE_SECONDS) and not self._stopping:
                self._wake.clear()
                self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            with self._lock:
                _busy, log_frames, _done = conn.execute(
                    "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # e.g. SQLITE_BUSY: the next poke retries
            self.error = exc
            return
        self.log_bytes = max(log_frames, 0) * self.page_size
        self.checkpoints += 1
