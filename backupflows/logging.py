"""Structured logging for every backupflows process.

``configure_logging()`` installs one handler on the root logger: readable
lines by default, one JSON object per line when ``BACKUPFLOWS_LOG_JSON=1``.
Every record passes ``RedactingFilter`` and every formatted line (tracebacks
included) passes ``redact_text``, so no URI password or token reaches a log.
Celery workers use it too (``backupflows.tasks.app`` connects Celery's
``setup_logging`` signal).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from backupflows.redact import redact_text

# LogRecord attributes that are not "extra" fields
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_HANDLER_MARK = "_backupflows_handler"


class RedactingFilter(logging.Filter):
    """Replace a record's message by its redacted, fully formatted text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad %-format must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact_text(message)
        record.args = None
        return True


class TextFormatter(logging.Formatter):
    """``2024-01-01T00:00:00Z INFO logger: message``, redacted."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _iso(record.created)

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(out, default=str, ensure_ascii=False))


def _iso(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def configure_logging(
    level: str | int | None = None, json_lines: bool | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """Install (or replace) the backupflows handler on the root logger.

    ``level`` and ``json_lines`` default to ``BACKUPFLOWS_LOG_LEVEL`` and
    ``BACKUPFLOWS_LOG_JSON``. Returns the handler (tests read its stream).
    """
    from backupflows.settings import get_settings

    settings = get_settings()
    json_lines = settings.log_json if json_lines is None else json_lines
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(RedactingFilter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level or settings.log_level)
    return handler
