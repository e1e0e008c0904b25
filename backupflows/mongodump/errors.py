"""Errors of the mongodump formats (directory layout and archive)."""

from __future__ import annotations

from backupflows.errors import BackupflowsError


class DumpFormatError(BackupflowsError):
    """A dump directory or archive is corrupt, truncated or not what it claims.

    The message names the file (or stream) and, where it applies, the byte
    offset of the problem, counted in the uncompressed stream.
    """


class ArchiveChecksumError(DumpFormatError):
    """A namespace's documents do not match the CRC of its EOF header."""
