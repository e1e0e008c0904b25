"""Settings: embedded defaults, production overrides, one clear error per bad value."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from backupflows.errors import ConfigError
from backupflows.settings import get_settings, load_settings, reset_settings


def test_defaults_are_the_embedded_setup_under_the_data_dir(tmp_path: Path) -> None:
    s = load_settings({"BACKUPFLOWS_DATA_DIR": str(tmp_path)})
    assert s.data_dir == tmp_path
    assert s.catalog_url == f"sqlite:///{tmp_path}/catalog.db"
    assert s.broker_url == f"sqlite:///{tmp_path}/broker.db"
    assert s.embedded_broker
    assert s.result_backend == f"db+sqlite:///{tmp_path}/results.db"
    assert s.store_dir == tmp_path / "store"
    assert s.heads_dir == tmp_path / "heads"
    assert s.daemon_id == socket.gethostname()
    assert s.slice_bytes == 10 * 1024 * 1024
    assert s.log_json is False and s.log_level == "INFO"
    assert s.visibility_timeout == 3600 and s.broker_key_prefix == ""


def test_default_data_dir_is_dot_backupflows_in_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings({})
    assert s.data_dir == tmp_path / ".backupflows"
    assert s.data_dir.is_absolute()  # workers that chdir still find it


def test_production_overrides(tmp_path: Path) -> None:
    s = load_settings({
        "BACKUPFLOWS_DATA_DIR": str(tmp_path),
        "BACKUPFLOWS_BROKER_URL": "redis://redis:6379/0",
        "BACKUPFLOWS_RESULT_BACKEND": "redis://redis:6379/1",
        "BACKUPFLOWS_CATALOG_URL": "postgresql://backup:pw@db/backupflows",
        "BACKUPFLOWS_DAEMON_ID": "daemon-7",
        "BACKUPFLOWS_LOG_JSON": "yes",
        "BACKUPFLOWS_LOG_LEVEL": "debug",
        "BACKUPFLOWS_SLICE_BYTES": "4MiB",
        "BACKUPFLOWS_STORE_DIR": str(tmp_path / "elsewhere"),
        "BACKUPFLOWS_BROKER_KEY_PREFIX": "site1:",
        "BACKUPFLOWS_VISIBILITY_TIMEOUT": "600",
    })
    assert s.broker_url == "redis://redis:6379/0" and not s.embedded_broker
    assert s.result_backend == "redis://redis:6379/1"
    # plain postgresql:// uses the installed psycopg 3 driver
    assert s.catalog_url == "postgresql+psycopg://backup:pw@db/backupflows"
    assert s.daemon_id == "daemon-7"
    assert s.log_json is True and s.log_level == "DEBUG"
    assert s.slice_bytes == 4 * 1024 * 1024
    assert s.store_dir == tmp_path / "elsewhere" and s.heads_dir == tmp_path / "heads"
    assert s.broker_key_prefix == "site1:" and s.visibility_timeout == 600


@pytest.mark.parametrize(("raw", "expected"), [
    ("1048576", 1048576), ("10MB", 10_000_000), ("10mib", 10 * 1024**2), ("512k", 512_000),
    (" 2 GiB ", 2 * 1024**3),
])
def test_slice_bytes_units(raw: str, expected: int) -> None:
    assert load_settings({"BACKUPFLOWS_SLICE_BYTES": raw}).slice_bytes == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("0.45", 0.45), ("45%", 0.45), (" 100% ", 1.0), ("0", 0.0), ("1", 1.0), ("12.5%", 0.125),
])
def test_groom_live_ratio_as_fraction_or_percentage(raw: str, expected: float) -> None:
    s = load_settings({"BACKUPFLOWS_GROOM_MIN_LIVE_RATIO": raw,
                       "BACKUPFLOWS_GROOM_MIN_DEAD_BYTES": "1GiB"})
    assert s.groom_min_live_ratio == pytest.approx(expected)
    assert s.groom_min_dead_bytes == 1024**3
    default = load_settings({})
    assert (default.groom_min_live_ratio, default.groom_min_dead_bytes) == (0.45, 64 * 1024**2)


@pytest.mark.parametrize(("name", "raw", "hint"), [
    ("SLICE_BYTES", "ten", "expected a size in bytes"),
    ("SLICE_BYTES", "10 parsecs", "expected a size in bytes"),
    ("SLICE_BYTES", "0", "greater than zero"),
    ("LOG_JSON", "maybe", "expected one of"),
    ("LOG_LEVEL", "loud", "expected one of"),
    ("VISIBILITY_TIMEOUT", "1.5h", "whole number of seconds"),
    ("BROKER_URL", "localhost:6379", "expected a URL"),
    ("CATALOG_URL", "catalog.db", "expected a URL"),
    ("DAEMON_ID", "my daemon", "letters, digits"),
    ("GROOM_MIN_LIVE_RATIO", "1.5", "fraction from 0 to 1"),
    ("GROOM_MIN_LIVE_RATIO", "-5%", "fraction from 0 to 1"),
    ("GROOM_MIN_LIVE_RATIO", "half", "fraction from 0 to 1"),
    ("GROOM_MIN_LIVE_RATIO", "nan", "fraction from 0 to 1"),
    ("GROOM_MIN_DEAD_BYTES", "lots", "expected a size in bytes"),
])
def test_bad_values_give_one_clear_error(name: str, raw: str, hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({f"BACKUPFLOWS_{name}": raw})
    message = str(err.value)
    assert f"BACKUPFLOWS_{name}={raw!r}" in message and hint in message
    assert "\n" not in message


def test_get_settings_is_cached_until_reset(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    monkeypatch.setenv("BACKUPFLOWS_DAEMON_ID", "changed")
    assert get_settings() is first
    reset_settings()
    assert get_settings().daemon_id == "changed"


def test_ensure_dirs_creates_data_store_and_heads(data_dir: Path) -> None:
    s = get_settings()
    assert not data_dir.exists()
    s.ensure_dirs()
    assert s.store_dir.is_dir() and s.heads_dir.is_dir()


def test_describe_redacts_passwords(tmp_path: Path) -> None:
    from backupflows.settings import describe

    shown = describe(load_settings({
        "BACKUPFLOWS_DATA_DIR": str(tmp_path),
        "BACKUPFLOWS_CATALOG_URL": "postgresql+psycopg://u:hunter2@db/x",
        "BACKUPFLOWS_BROKER_URL": "redis://:hunter2@r:6379/0",
    }))
    assert "hunter2" not in repr(shown)
    assert shown["catalog_url"] == "postgresql+psycopg://u:***@db/x"
    assert shown["data_dir"] == str(tmp_path)
