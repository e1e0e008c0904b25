"""The head's WAL is checkpointed by a background thread: committed pages
reach the database file without the writer running the checkpoint, the
thread ends with the store (or when idle), and a log the thread cannot keep
short is checkpointed by the writer itself."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import bson
import pytest

from backupflows.head import checkpoint
from backupflows.head.store import HeadStore


def _fill(head: HeadStore, start: int, n: int) -> None:
    head.ensure_collection("d", "c")
    docs = [bson.encode({"_id": i, "pad": "x" * 500}) for i in range(start, start + n)]
    head.load_slice("d", "c", docs)


def _wait_for(predicate, seconds: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_committed_pages_reach_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with HeadStore(path) as head:
        head.conn.execute("PRAGMA wal_autocheckpoint=0")  # only the thread checkpoints
        _fill(head, 0, 2000)
        # soon the database file alone (no WAL) holds every committed document
        _wait_for(lambda: _count_in_file(path, tmp_path / "copy.db") == 2000)
        assert head._checkpointer is not None and head._checkpointer.checkpoints > 0


def _count_in_file(path: Path, copy: Path) -> int:
    shutil.copy(path, copy)
    conn = sqlite3.connect(copy)
    try:
        return conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
    except sqlite3.DatabaseError:  # no table yet, or copied mid-checkpoint
        return -1
    finally:
        conn.close()


def test_the_thread_ends_with_the_store_and_when_idle(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "IDLE_SECONDS", 0.05)
    head = HeadStore(tmp_path / "h.db")
    _fill(head, 0, 10)
    cp = head._checkpointer
    assert cp is not None and cp._thread is not None
    _wait_for(lambda: not cp._thread.is_alive())  # idle: gone
    _fill(head, 10, 10)  # the next commit starts it again
    assert cp._thread.is_alive() or cp.checkpoints >= 2
    head.close()
    assert not cp._thread.is_alive()
    assert head._checkpointer is None


def test_past_the_catch_up_size_the_writer_checkpoints_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with HeadStore(tmp_path / "h.db") as head:
        _fill(head, 0, 500)
        cp = head._checkpointer
        assert cp is not None
        _wait_for(lambda: cp.checkpoints > 0)
        monkeypatch.setattr(checkpoint, "CATCH_UP_BYTES", -1)
        calls: list[str] = []
        head.conn.set_trace_callback(calls.append)
        _fill(head, 500, 500)
        head.conn.set_trace_callback(None)
        assert "PRAGMA wal_checkpoint(PASSIVE)" in calls  # on the writer's connection
        assert head.content_hash(head.require("d", "c")).count == 1000
        assert head.integrity_check() == []


def test_a_reader_pinning_the_log_does_not_stall_the_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "CATCH_UP_BYTES", -1)  # the writer checkpoints every time
    with HeadStore(tmp_path / "h.db") as head:
        _fill(head, 0, 100)
        with head.snapshot() as snap:
            seen = snap.content_hash(snap.require("d", "c")).count
            start = time.monotonic()
            for i in range(5):
                _fill(head, 100 + i * 100, 100)
            assert time.monotonic() - start < 10  # no waiting (60 s busy timeout) for the reader
            assert snap.content_hash(snap.require("d", "c")).count == seen == 100
        assert head.content_hash(head.require("d", "c")).count == 600
