"""Crash test: a subprocess applying a long oplog is killed (-9) at random
points; each restart resumes from the head's own optime; the end state is
the one of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from backupflows.head.store import HeadStore
from backupflows.oplog.applier import Applier
from tests.oplog.helpers import head_state
from tests.oplog.oplog_gen import generate

ENTRIES = 50_000
KILLS = 24
BATCH = 150


def worker(head: Path, oplog: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.oplog.crash_worker", str(head), str(oplog), str(BATCH)],
        cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE)


def optime(path: Path) -> int:
    with HeadStore(path) as head:
        return head.optime().ts


def wait_for_progress(path: Path, beyond: int, proc: subprocess.Popen[bytes]) -> None:
    """Poll the head read-only until its optime passes ``beyond``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
            try:
                ts = conn.execute("SELECT value FROM meta WHERE key='ts'").fetchone()[0]
            finally:
                conn.close()
            if ts > beyond:
                return
        except sqlite3.OperationalError:
            pass  # not created yet
        time.sleep(0.01)


def test_kill_9_at_random_points_converges(tmp_path: Path) -> None:
    entries = generate(seed=1234, n=ENTRIES)
    oplog = tmp_path / "oplog.bson"
    oplog.write_bytes(b"".join(entries))
    with HeadStore(tmp_path / "reference.db") as ref:
        Applier(ref).apply(entries, batch_size=BATCH)
        want = head_state(ref)

    head = tmp_path / "crashed.db"
    rng = random.Random(99)
    positions = [0]
    for _ in range(KILLS):
        proc = worker(head, oplog)
        wait_for_progress(head, positions[-1], proc)
        time.sleep(rng.uniform(0, 0.06))  # somewhere inside a later batch
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"worker ended (status {proc.returncode}) before the kill: "
                                 f"{err[-2000:]}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        positions.append(optime(head))
    assert len(set(positions)) == KILLS + 1  # killed at different points, each advanced
    assert positions == sorted(positions)
    assert positions[-1] < want["optime"].ts  # still work left: a real restart
    proc = worker(head, oplog)
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    with HeadStore(head) as crashed:
        assert head_state(crashed) == want
        assert crashed.integrity_check() == []
