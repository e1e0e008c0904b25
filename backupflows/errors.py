"""One error tree for backupflows.

Callers catch the family they can handle; the command line turns any
``BackupflowsError`` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations


class BackupflowsError(Exception):
    """Base of every error a user can cause or must be told about."""

    exit_code = 1


class ConfigError(BackupflowsError):
    """Bad settings or environment."""


class CatalogError(BackupflowsError):
    """The catalog is unreachable, not migrated, or inconsistent."""


class NotFound(BackupflowsError):
    """A named deployment, job, snapshot or restore does not exist."""


class Conflict(BackupflowsError):
    """The request conflicts with current state (already running, ...)."""


class SourceError(BackupflowsError):
    """The backed-up MongoDB is unreachable or answered with an error."""


class OplogError(BackupflowsError):
    """An oplog entry could not be parsed or applied."""


class ResyncRequired(OplogError):
    """The backup can no longer follow the source (gap, importCollection)."""


class HeadError(BackupflowsError):
    """The head store is missing, corrupt or inconsistent."""


class StorageError(BackupflowsError):
    """Snapshot storage (blocks, manifests, backends) failed."""


class IntegrityError(StorageError):
    """Stored data does not match its recorded hash or counts."""


class RestoreError(BackupflowsError):
    """A restore cannot be done or failed its verification."""
