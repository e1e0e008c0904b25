# ruff: noqa: F811 - pytest fixtures imported from snapshot_helpers
"""kill -9 during a snapshot and during a groom, at >= 10 points each: no
visible partial snapshot, no referenced block lost (full integrity check
after each), and the next snapshot / groom completes the work."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from backupflows.head.store import HeadStore
from backupflows.storage import groom, service
from tests.oplog.oplog_gen import generate
from tests.plugins.services import REPO_ROOT
from tests.storage.snapshot_helpers import (  # noqa: F401 - fixtures
    assert_store_intact,
    catalog,
    fill,
    job,
    restored,
    small_opts,
    state_of,
    storage,
)

pytestmark = pytest.mark.timeout(600)


def _child(mode: str, catalog: str, store: Path, head: Path, job: int, n: int) -> bool:
    """Run the crash worker; True if it was killed (False: it finished first)."""
    proc = subprocess.run([sys.executable, "-m", "tests.storage.crash_worker", mode, catalog,
                           str(store), str(head), str(job), str(n)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode == 0:
        return False
    assert proc.returncode == -9, proc.stderr
    return True


def _done_ids(storage: service.Storage, job: int) -> list[int]:
    with storage.reading() as s:
        return [r.id for r in service.list_snapshots(s, job)]


def _points(default: int, soak: int, request: pytest.FixtureRequest) -> range:
    return range(1, soak if request.config.getoption("-m") == "soak" else default)


@pytest.mark.parametrize("spread", [3])
def test_kill_during_snapshot(storage: service.Storage, catalog: str, job: int, tmp_path: Path,
                              spread: int, request: pytest.FixtureRequest) -> None:
    oplog = generate(seed=9, n=3000)
    head_path = tmp_path / "h.db"
    head = HeadStore(head_path)
    fill(head, oplog[:1500])
    base = service.take(storage, job, head, opts=small_opts())
    killed = 0
    for n in _points(12, 40, request):
        fill(head, oplog[1500 + n * 50:1500 + n * 50 + 50])
        expected = state_of(head)
        before = _done_ids(storage, job)
        was_killed = _child("snapshot", catalog, tmp_path / "store", head_path, job,
                            n * spread)
        killed += was_killed
        after = _done_ids(storage, job)
        if was_killed:
            assert after == before  # nothing partial became visible
        for sid in after:
            restored(storage, sid)  # every visible snapshot reads back
        assert_store_intact(storage)
        time.sleep(1.1)  # the killed snapshot's lease lapses
        sid = service.take(storage, job, head, opts=small_opts())
        assert restored(storage, sid) == expected == state_of(head)
        groom.run(storage, orphan_grace=0.0)
        assert_store_intact(storage)
    assert killed >= 10
    assert restored(storage, base) is not None
    head.close()


def test_kill_during_groom(storage: service.Storage, catalog: str, job: int, tmp_path: Path,
                           request: pytest.FixtureRequest) -> None:
    oplog = generate(seed=11, n=4000)
    head_path = tmp_path / "h.db"
    head = HeadStore(head_path)
    killed = 0
    start = 0
    for n in _points(12, 40, request):
        stop = start + 250
        fill(head, oplog[start:stop] or oplog[-10:])
        start = stop
        force = "full" if n % 2 else None
        for _ in range(2):
            service.take(storage, job, head, opts=small_opts(force=force))
        keep = _done_ids(storage, job)[-1]
        expected = restored(storage, keep)
        with storage.sessions() as s:
            for sid in _done_ids(storage, job)[:-1]:
                service.delete_snapshot(s, sid)
        killed += _child("groom", catalog, tmp_path / "store", head_path, job, n * 2)
        assert restored(storage, keep) == expected  # no referenced block lost
        assert_store_intact(storage)
        time.sleep(1.1)  # the killed groom's lease lapses
        groom.run(storage, orphan_grace=0.0)
        assert groom.plan(storage).dead == []
        assert restored(storage, keep) == expected
        assert_store_intact(storage)
    assert killed >= 10
    head.close()
