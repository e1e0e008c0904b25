"""Connections to the backed-up MongoDB (the *source*) and its errors.

``connect(uri)`` returns a ``MongoClient`` whose default document class is
``RawBSONDocument``: data reads hand back the bytes the server sent, never
decoded. Metadata reads (hello, listCollections, ...) use ``META`` codec
options on a database handle. Every pymongo error becomes one
``SourceError`` line with the URI redacted (a password never appears in a
message, even for a URI too malformed to parse).

Retries: pymongo retries a failed ``find``/``aggregate``/``listCollections``
once (retryable reads); nothing retries a failed ``getMore``. The slicer and
the oplog reader therefore reopen their cursor from the last position they
consumed, with ``Backoff`` (bounded attempts, exponential delay) around it,
for the errors ``is_transient`` accepts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bson.codec_options import CodecOptions, DatetimeConversion
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient, uri_parser
from pymongo.errors import (
    AutoReconnect,
    ConfigurationError,
    ConnectionFailure,
    CursorNotFound,
    InvalidURI,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from backupflows.errors import SourceError
from backupflows.redact import redact_text, redact_uri
from backupflows.source.errors import SourceUnavailable

__all__ = ["DEFAULT_BACKOFF", "LOSSLESS", "META", "RAW", "Backoff", "RetryBudget",
           "SourceUnavailable", "connect", "describe", "display_uri", "is_transient",
           "source_call", "source_error"]

APP_NAME = "backupflows"

#: data reads: documents as raw bytes
RAW = CodecOptions(document_class=RawBSONDocument)
#: metadata reads: plain dicts; dates outside Python's range stay DatetimeMS
META: CodecOptions = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)
#: decoding a ``{_id: v}`` bound so that re-encoding gives the same bytes
LOSSLESS: CodecOptions = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_MS)

_AUTH_CODES = {11, 13, 18}   # UserNotFound, Unauthorized, AuthenticationFailed
#: server error codes worth a retry (network, elections, shutdown, interrupted cursors)
TRANSIENT_CODES = {6, 7, 43, 63, 89, 91, 134, 150, 189, 262, 9001, 10107, 11600, 11602,
                   13435, 13436}


@dataclass(frozen=True)
class Backoff:
    """Bounded retries: ``attempts`` tries in all, sleeping ``first_s``,
    then doubling up to ``max_s`` between them."""

    attempts: int = 6
    first_s: float = 0.1
    max_s: float = 2.0

    def delay(self, failures: int) -> float:
        """Sleep before the next try, after ``failures`` failed tries in a row."""
        return min(self.max_s, self.first_s * 2 ** (failures - 1))


DEFAULT_BACKOFF = Backoff()


class RetryBudget:
    """Counts consecutive failures against a ``Backoff``; progress resets it."""

    def __init__(self, backoff: Backoff = DEFAULT_BACKOFF) -> None:
        self.backoff = backoff
        self.failures = 0

    def wait_or_raise(self, exc: PyMongoError, what: str) -> None:
        """Sleep before the next attempt, or raise ``SourceError`` when the
        error is not transient (``SourceUnavailable`` when the attempts are
        used up)."""
        if not is_transient(exc):
            raise source_error(exc, what) from None
        self.failures += 1
        if self.failures >= self.backoff.attempts:
            raise SourceUnavailable(f"{what}: gave up after {self.backoff.attempts} attempts: "
                                    f"{_message(exc)}") from None
        time.sleep(self.backoff.delay(self.failures))

    def progressed(self) -> None:
        self.failures = 0


def connect(uri: str, *, timeout_s: float = 10.0, socket_timeout_s: float = 120.0,
            check: bool = True, **options: Any) -> MongoClient:
    """A client of the source for reading, raw documents by default.

    ``timeout_s`` bounds server selection and connecting; ``socket_timeout_s``
    a single reply (longer than any awaitData wait). With ``check`` the
    source is pinged once, so an unreachable source or a failed login is a
    ``SourceError`` here rather than at the first read.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise SourceError("no source URI given: expected mongodb://host:port/?replicaSet=NAME")
    settings = dict(document_class=RawBSONDocument, appname=APP_NAME, retryReads=True,
                    serverSelectionTimeoutMS=int(timeout_s * 1000),
                    connectTimeoutMS=int(timeout_s * 1000),
                    socketTimeoutMS=int(socket_timeout_s * 1000))
    settings.update(options)
    try:
        uri_parser.parse_uri(uri, warn=False)   # bad option values raise instead of warning
        client: MongoClient = MongoClient(uri, **settings)
    except (ConfigurationError, InvalidURI, ValueError, TypeError) as exc:
        raise SourceError(f"bad source URI {display_uri(uri)}: {_message(exc)}") from None
    if check:
        try:
            client.admin.command("ping")
        except PyMongoError as exc:
            client.close()
            raise source_error(exc, f"source {display_uri(uri)}") from None
    return client


def display_uri(uri: str) -> str:
    """The URI with its password masked, even when it does not parse (an
    unescaped ``@`` or ``/`` in the password): everything up to the last
    ``@`` of the authority is user information."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return redact_text(uri)
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = f"{user}:***@{rest[at + 1:]}" if colon else f"{user}@{rest[at + 1:]}"
    return redact_uri(f"{scheme}{sep}{rest}")


def describe(client: MongoClient) -> str:
    """``host:port,...`` of a client, for messages."""
    try:
        nodes = client.topology_description.server_descriptions()
        return ",".join(f"{h}:{p}" for h, p in sorted(nodes)) or "source"
    except Exception:  # noqa: BLE001 - a description must never fail
        return "source"


def is_transient(exc: BaseException) -> bool:
    """Errors a read may retry: network trouble, elections, killed cursors."""
    if isinstance(exc, ServerSelectionTimeoutError):
        return False   # already waited the whole selection timeout
    if isinstance(exc, AutoReconnect | ConnectionFailure | CursorNotFound):
        return True
    if isinstance(exc, OperationFailure):
        labels = ("RetryableReadError", "ResumableChangeStreamError")
        return exc.code in TRANSIENT_CODES or any(exc.has_error_label(x) for x in labels)
    return False


def source_error(exc: PyMongoError, what: str) -> SourceError:
    """One clear line for a pymongo error (never a password); transient
    errors (``is_transient``, and an unreachable source) are ``SourceUnavailable``."""
    if isinstance(exc, ServerSelectionTimeoutError):
        return SourceUnavailable(f"cannot reach {what}: {_unreachable_reason(exc)}")
    if isinstance(exc, OperationFailure) and exc.code in _AUTH_CODES:
        return SourceError(f"{what}: authentication failed (check the user name, password and "
                           f"authSource): {_message(exc)}")
    if isinstance(exc, ConfigurationError):
        return SourceError(f"{what}: bad configuration: {_message(exc)}")
    if is_transient(exc):
        return SourceUnavailable(f"{what}: {_message(exc)}")
    return SourceError(f"{what}: {_message(exc)}")


@contextmanager
def source_call(what: str) -> Iterator[None]:
    """Turn any pymongo error raised inside into ``source_error(exc, what)``."""
    try:
        yield
    except PyMongoError as exc:
        raise source_error(exc, what) from None


def _message(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    if hasattr(details, "get") and details.get("errmsg"):
        text = str(details["errmsg"])   # without pymongo's "full error: {...}" dump
        code = details.get("code")
        text = f"{text} (code {code})" if code is not None else text
    else:
        text = str(exc)
    return redact_text(" ".join(text.split()))[:500]


def _unreachable_reason(exc: ServerSelectionTimeoutError) -> str:
    text = str(exc).split(", Timeout:")[0]
    text = text.split(" (configured timeouts")[0]
    return redact_text(" ".join(text.split()))[:300] or "no server answered"
