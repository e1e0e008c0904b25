"""The command line as a user runs it: subprocesses, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

CLI = [sys.executable, "-c", "from backupflows.cli import main; main()"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUPFLOWS_")}
    return {**env, "BACKUPFLOWS_DATA_DIR": str(data_dir), **extra}


def test_help_lists_the_verbs() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for verb in ("db", "worker", "beat", "demo", "sandbox"):
        assert f"  {verb} " in result.stdout


@pytest.mark.parametrize("verb", ["db", "worker", "beat"])
def test_verb_help(verb: str) -> None:
    result = run_cli(verb, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: backupflows" in result.stdout


def test_db_upgrade_creates_the_catalog(tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    result = run_cli("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    from backupflows.catalog.migrate import head

    assert f"is at revision {head()}" in result.stdout
    engine = create_engine(f"sqlite:///{tmp_path}/data/catalog.db")
    assert {"deployments", "backup_jobs", "events"} <= set(inspect(engine).get_table_names())
    engine.dispose()
    current = run_cli("db", "current", env=env)
    assert current.returncode == 0 and f"revision {head()} (head {head()}, up to date)" in current.stdout
    down = run_cli("db", "downgrade", "base", env=env)
    assert down.returncode == 0 and "base (empty)" in down.stdout


@pytest.mark.parametrize(("extra", "expected"), [
    ({"BACKUPFLOWS_CATALOG_URL": "postgresql://bob:hunter2@127.0.0.1:1/x"}, "cannot use catalog"),
    ({"BACKUPFLOWS_CATALOG_URL": "nosuchdb://x"}, "unsupported driver"),
    ({"BACKUPFLOWS_CATALOG_URL": "catalog.db"}, "expected a URL"),
    ({"BACKUPFLOWS_SLICE_BYTES": "ten"}, "BACKUPFLOWS_SLICE_BYTES='ten'"),
])
def test_bad_catalog_or_setting_is_one_line_without_traceback(
    tmp_path: Path, extra: dict[str, str], expected: str
) -> None:
    result = run_cli("db", "upgrade", env=_env(tmp_path, **extra))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_downgrade_needs_a_revision(tmp_path: Path) -> None:
    result = run_cli("db", "downgrade", env=_env(tmp_path))
    assert result.returncode == 2 and "Missing argument 'REVISION'" in result.stderr
