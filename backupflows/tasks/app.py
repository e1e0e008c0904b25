"""The backupflows Celery app.

Configuration comes from ``celeryconfig`` (delivery, queues, routing, beat)
and the settings (broker, result backend, key prefix, visibility timeout).
Task modules are listed in ``TASK_MODULES``; later issues append theirs.
Run it with ``backupflows worker`` / ``backupflows beat``, or
``celery -A backupflows.tasks.app worker`` (Flower: ``celery -A backupflows.tasks.app flower``).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from backupflows.settings import Settings, get_settings
from backupflows.tasks import sqlite_broker

sqlite_broker.register()  # sqlite:// broker URLs, in every process that loads the app

TASK_MODULES: list[str] = [
    "backupflows.tasks.system",
    "backupflows.tasks.backup",
    "backupflows.tasks.restores",
    "backupflows.tasks.snapshots",
    "backupflows.tasks.alerts",
]


def settings_conf(settings: Settings) -> dict[str, Any]:
    """The Celery settings derived from backupflows settings."""
    conf: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "broker_transport_options": _broker_options(settings),
    }
    if settings.result_backend.startswith("redis") and settings.broker_key_prefix:
        conf["result_backend_transport_options"] = {
            "global_keyprefix": settings.broker_key_prefix
        }
    if settings.result_backend.startswith("db+sqlite"):
        # several processes write results: wait for the SQLite lock, don't fail
        conf["database_engine_options"] = {"connect_args": {"timeout": 30}}
        conf["database_short_lived_sessions"] = True
    return conf


def _broker_options(settings: Settings) -> dict[str, Any]:
    if settings.embedded_broker:
        return sqlite_broker.transport_options(settings)
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout}
    if settings.broker_key_prefix:
        options["global_keyprefix"] = settings.broker_key_prefix
    return options


def create_app(settings: Settings | None = None) -> Celery:
    """A Celery app configured from ``celeryconfig`` and ``settings``."""
    settings = settings or get_settings()
    if settings.embedded_broker or settings.result_backend.startswith("db+sqlite"):
        settings.ensure_dirs()
    app = Celery("backupflows", include=TASK_MODULES)
    app.config_from_object("celeryconfig")
    app.conf.update(settings_conf(settings))
    return app


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    """Workers and beat log through backupflows' redacting handler."""
    from backupflows.logging import configure_logging

    configure_logging(level=loglevel or None)


app = create_app()
