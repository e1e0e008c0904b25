"""One settings module: every ``BACKUPFLOWS_*`` environment variable.

The defaults give the embedded set-up, with no server to install: a data
directory (``./.backupflows``, made absolute when read), a SQLite catalog,
filesystem stores and a SQLite-backed Celery broker (``backupflows.tasks.sqlite_broker``) and result backend inside
it. Production switches by environment only::

    BACKUPFLOWS_BROKER_URL=redis://redis:6379/0
    BACKUPFLOWS_RESULT_BACKEND=redis://redis:6379/1
    BACKUPFLOWS_CATALOG_URL=postgresql+psycopg://backup@db/backupflows

``get_settings()`` reads the environment once per process and caches the
result; ``reset_settings()`` forgets it (tests change the environment).
A bad value raises ``ConfigError`` naming the variable and what it expects.
"""

from __future__ import annotations

import functools
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from backupflows.errors import ConfigError

PREFIX = "BACKUPFLOWS_"
DEFAULT_DATA_DIR = ".backupflows"
MiB = 1024 * 1024

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-zA-Z]*)\s*$")
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


@dataclass(frozen=True)
class Settings:
    """The whole configuration of one backupflows process (see README)."""

    data_dir: Path
    catalog_url: str
    broker_url: str
    result_backend: str
    store_dir: Path
    heads_dir: Path
    store_url: str
    daemon_id: str
    log_json: bool
    log_level: str
    slice_bytes: int
    broker_key_prefix: str
    visibility_timeout: int
    groom_min_live_ratio: float = 0.45
    groom_min_dead_bytes: int = 64 * MiB

    @property
    def embedded_broker(self) -> bool:
        """True when the broker is the server-less SQLite one (``sqlite://``)."""
        return self.broker_url.startswith("sqlite://")

    def ensure_dirs(self) -> None:
        """Create the data directory and the store directories it holds."""
        for path in (self.data_dir, self.store_dir, self.heads_dir):
            path.mkdir(parents=True, exist_ok=True)


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(PREFIX + name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def parse_bool(name: str, raw: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{PREFIX}{name}={raw!r}: expected one of 1, 0, true, false, yes, no")


def parse_size(name: str, raw: str) -> int:
    """A byte count: ``10485760``, ``10MiB``, ``10MB`` (1000-based), ``512k``."""
    match = _SIZE_RE.match(raw)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _SIZE_UNITS:
        raise ConfigError(
            f"{PREFIX}{name}={raw!r}: expected a size in bytes such as 10485760, 10MiB or 10MB"
        )
    value = int(match.group(1)) * _SIZE_UNITS[unit]
    if value <= 0:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: must be greater than zero")
    return value


def parse_ratio(name: str, raw: str) -> float:
    """A fraction from 0 to 1: ``0.45`` or ``45%``."""
    text = raw.strip()
    percent = text.endswith("%")
    try:
        value = float(text[:-1] if percent else text) / (100 if percent else 1)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:  # also NaN
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected a fraction from 0 to 1 "
                          "such as 0.45, or a percentage such as 45%")
    return value


def parse_seconds(name: str, raw: str) -> int:
    """A whole number of seconds, greater than zero."""
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected a whole number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: must be greater than zero")
    return value


_URL_EXAMPLES = {
    "BROKER_URL": "redis://host:6379/0",
    "RESULT_BACKEND": "redis://host:6379/1",
    "CATALOG_URL": "postgresql+psycopg://user@host/db",
}


def _url(name: str, raw: str) -> str:
    if "://" not in raw:
        example = _URL_EXAMPLES.get(name, "scheme://host/path")
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected a URL such as {example}")
    return raw


def normalize_catalog_url(raw: str) -> str:
    """Accept ``postgres://`` and ``postgresql://``: use the installed psycopg 3 driver."""
    for scheme in ("postgres://", "postgresql://"):
        if raw.startswith(scheme):
            return "postgresql+psycopg://" + raw[len(scheme):]
    return _url("CATALOG_URL", raw)


def _get(env: Mapping[str, str], name: str, default: T, parse: Callable[[str, str], T]) -> T:
    raw = _env(env, name)
    return default if raw is None else parse(name, raw)


def _log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected one of {', '.join(sorted(_LOG_LEVELS))}")
    return level


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: ``os.environ``); no caching."""
    env = os.environ if env is None else env
    data_dir = Path(_env(env, "DATA_DIR") or DEFAULT_DATA_DIR).expanduser().absolute()
    catalog = _env(env, "CATALOG_URL")
    store_dir = Path(_env(env, "STORE_DIR") or data_dir / "store").expanduser().absolute()
    return Settings(
        data_dir=data_dir,
        catalog_url=normalize_catalog_url(catalog) if catalog else f"sqlite:///{data_dir}/catalog.db",
        broker_url=_get(env, "BROKER_URL", f"sqlite:///{data_dir}/broker.db", _url),
        result_backend=_get(env, "RESULT_BACKEND", f"db+sqlite:///{data_dir}/results.db", _url),
        store_dir=store_dir,
        heads_dir=Path(_env(env, "HEADS_DIR") or data_dir / "heads").expanduser().absolute(),
        store_url=_env(env, "STORE_URL") or str(store_dir),
        daemon_id=_daemon_id(env),
        log_json=_get(env, "LOG_JSON", False, parse_bool),
        log_level=_get(env, "LOG_LEVEL", "INFO", _log_level),
        slice_bytes=_get(env, "SLICE_BYTES", 10 * MiB, parse_size),
        broker_key_prefix=_env(env, "BROKER_KEY_PREFIX") or "",
        visibility_timeout=_get(env, "VISIBILITY_TIMEOUT", 3600, parse_seconds),
        groom_min_live_ratio=_get(env, "GROOM_MIN_LIVE_RATIO", 0.45, parse_ratio),
        groom_min_dead_bytes=_get(env, "GROOM_MIN_DEAD_BYTES", 64 * MiB, parse_size),
    )


def _daemon_id(env: Mapping[str, str]) -> str:
    daemon_id = _env(env, "DAEMON_ID") or socket.gethostname()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", daemon_id):
        raise ConfigError(
            f"{PREFIX}DAEMON_ID={daemon_id!r}: use letters, digits, '.', '_' and '-' only"
        )
    return daemon_id


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings; the next ``get_settings()`` reads the environment."""
    get_settings.cache_clear()


def describe(settings: Settings) -> dict[str, Any]:
    """The settings as plain values with passwords redacted (for ``--help``/logs)."""
    from backupflows.redact import redact_uri

    out: dict[str, Any] = {}
    for field in fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, Path):
            value = str(value)
        elif field.name.endswith("_url") or field.name == "result_backend":
            value = redact_uri(value)
        out[field.name] = value
    return out
