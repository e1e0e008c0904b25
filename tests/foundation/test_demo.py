"""``backupflows demo``: the README's first command, run as a user runs it.

It backs up a sandbox under live writes with a real worker process, takes a
snapshot, restores the snapshot and a point in time (to directories and into
a second sandbox) and compares every restore with the source's recorded
content; exit 0 only when all of it holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backupflows.cli.demo import Demo, dump_fingerprint
from backupflows.contenthash import ContentHash
from tests.plugins.services import REPO_ROOT

pytestmark = [pytest.mark.timeout(400), pytest.mark.sandbox_only]
CLI = [sys.executable, "-c", "from backupflows.cli import main; main()"]


def _run(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPFLOWS_")}
    env.update(BACKUPFLOWS_DATA_DIR=str(data), PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([*CLI, "demo", *args], env=env, capture_output=True, text=True,
                          timeout=380, cwd=REPO_ROOT)


def test_demo_backs_up_restores_and_proves_it(tmp_path: Path) -> None:
    done = _run("--size", "2", "--rate", "150", data=tmp_path / "data")
    assert done.returncode == 0, done.stdout + done.stderr
    proved = [ln for ln in done.stdout.splitlines() if ln.strip().startswith("proved:")]
    assert len(proved) == 4, done.stdout
    assert "FAIL" not in done.stdout
    assert any("point in time" in p and "second sandbox" in p for p in proved)
    runs = list((tmp_path / "data" / "demo").iterdir())  # kept for inspection
    assert len(runs) == 1 and (runs[0] / "worker.log").exists()
    restored = dump_fingerprint(runs[0] / "restore-point")
    assert sum(h.count for h in restored.values()) > 500


def test_demo_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("keep me")
    done = _run("--dir", str(tmp_path / "run"), data=tmp_path / "data")
    assert done.returncode == 1
    assert "not empty" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert (tmp_path / "run" / "x").read_text() == "keep me"


def test_a_difference_is_a_failure_with_a_non_zero_exit(tmp_path: Path) -> None:
    demo = Demo(tmp_path, 1, 1, 30)
    same = {"a.b": ContentHash.of([b"\x05\x00\x00\x00\x00"])}
    demo.compare("same", dict(same), same)
    other = {"a.b": ContentHash.of([b"\x0d\x00\x00\x00\x10x\x00\x01\x00\x00\x00\x00"])}
    demo.compare("one document differs", other, same)
    demo.compare("a collection is missing", {}, same)
    assert demo.proved == ["same: 1 collections, 1 documents equal the source byte for byte"]
    assert len(demo.failed) == 2
    with pytest.raises(SystemExit) as exit_info:
        demo.summary()
    assert exit_info.value.code == 1
