"""Errors of job work, and which source failures are worth a retry."""

from __future__ import annotations

from backupflows.errors import BackupflowsError, ConfigError, SourceError


class LeaseLost(BackupflowsError):
    """Another worker holds the work now, or the job moved on (stopped,
    resynced, terminated): the current step stops without writing more."""


class StepFailed(BackupflowsError):
    """A step failed for a reason retrying will not fix; the job is ``failed``."""


_TRANSIENT_MARKS = ("cannot reach", "gave up after", "connection", "timed out", "NotPrimary",
                    "not primary", "interrupted", "shutdown")


def is_transient(exc: BaseException) -> bool:
    """True for source failures a later attempt may get past (unreachable,
    dropped connections after the reader's own retries, elections); False
    for bad input (URI, filter, not a replica set, authentication)."""
    transient_cls = _source_unavailable()
    if transient_cls is not None and isinstance(exc, transient_cls):
        return True
    if isinstance(exc, ConfigError) or not isinstance(exc, SourceError):
        return False
    text = str(exc)
    if "authentication failed" in text or "not a replica set" in text:
        return False
    return any(mark in text for mark in _TRANSIENT_MARKS)


def _source_unavailable() -> type[BaseException] | None:
    try:
        from backupflows.source import errors as source_errors  # type: ignore[attr-defined]
    except ImportError:
        return None
    cls = getattr(source_errors, "SourceUnavailable", None)
    return cls if isinstance(cls, type) else None
