"""Errors of the source family (all ``backupflows.errors.SourceError``).

- ``SourceUnavailable``: transient, worth retrying later;
- ``CollectionGone`` (``slicer``): a collection vanished while it was read;
- ``NamespaceFilterError`` (``namespaces``): a bad filter, permanent.
A plain ``SourceError`` is permanent (bad URI, failed login, not a replica
set, a command the server refuses).
"""

from __future__ import annotations

from backupflows.errors import SourceError


class SourceUnavailable(SourceError):
    """A transient failure: the source is unreachable, a connection dropped,
    an election or shutdown is in progress, retries ran out. Worth trying
    again later, unlike a plain ``SourceError``."""


__all__ = ["SourceError", "SourceUnavailable"]
