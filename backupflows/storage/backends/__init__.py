"""Object store backends: where slices, oplog segments, blocks and manifests
are stored. ``open_backend(url)`` is the one way to get one:

- ``/var/lib/backupflows/store`` or ``file:///var/lib/backupflows/store``:
  ``FilesystemBackend`` (the default);
- ``s3://bucket/optional/prefix?endpoint_url=http://minio:9000&region=eu-west-1``:
  ``S3Backend``; credentials from the standard AWS variables and files (never
  in the URL); also ``multipart_threshold`` and ``part_size`` in bytes.

The factory always wraps the backend in ``RetryingBackend``; ``log=True``
adds ``LoggingBackend``, and ``wrap`` adds any other wrappers (tests put a
``FaultInjectingBackend`` there, under the retries).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from backupflows.errors import ConfigError
from backupflows.storage.backends.base import (
    Backend,
    InvalidObjectName,
    ObjectInfo,
    ObjectNotFound,
    TransientStorageError,
    validate_name,
)
from backupflows.storage.backends.filesystem import FilesystemBackend
from backupflows.storage.backends.wrappers import (
    LoggingBackend,
    RetriesExhausted,
    RetryingBackend,
    RetryPolicy,
)

__all__ = [
    "Backend", "FilesystemBackend", "InvalidObjectName", "ObjectInfo", "ObjectNotFound",
    "RetriesExhausted", "RetryPolicy", "RetryingBackend", "TransientStorageError",
    "open_backend", "open_raw_backend",
]

_S3_PARAMS = {"endpoint_url": str, "region": str, "multipart_threshold": int, "part_size": int}


def open_backend(url: str | os.PathLike[str], *, retry: RetryPolicy | None = None,
                 log: bool = False,
                 wrap: Sequence[Callable[[Backend], Backend]] = ()) -> Backend:
    """The backend for ``url``, with retries (``retry`` or the default policy),
    optional logging, and the ``wrap`` wrappers innermost first."""
    backend = open_raw_backend(url)
    for wrapper in wrap:
        backend = wrapper(backend)
    if log:
        backend = LoggingBackend(backend)
    return RetryingBackend(backend, retry)


def open_raw_backend(url: str | os.PathLike[str]) -> Backend:
    """The backend for ``url`` without any wrapper."""
    text = os.fspath(url)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("object store URL is empty")
    if "://" not in text:
        return FilesystemBackend(text)
    parts = urlsplit(text)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"file URL {text!r} names a host; use file:///absolute/path")
        if not parts.path:
            raise ConfigError(f"file URL {text!r} has no path")
        return FilesystemBackend(unquote(parts.path))
    if parts.scheme == "s3":
        return _open_s3(text)
    raise ConfigError(f"unsupported object store URL {text!r}: use a path, file:///path "
                      "or s3://bucket/prefix")


def _open_s3(text: str) -> Backend:
    from backupflows.storage.backends.s3 import S3Backend

    parts = urlsplit(text)
    if "@" in parts.netloc:
        raise ConfigError("do not put credentials in the S3 URL; set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY (or an AWS profile) instead")
    bucket = parts.hostname or ""
    if not bucket:
        raise ConfigError(f"S3 URL {_redact(text)!r} has no bucket: use s3://bucket/prefix")
    prefix = unquote(parts.path).strip("/")
    if prefix:
        try:
            validate_name(prefix)
        except InvalidObjectName as e:
            raise ConfigError(f"S3 URL prefix {prefix!r} is invalid: {e}") from None
    return S3Backend(bucket, prefix, **_s3_params(parts.query))


def _s3_params(query: str) -> dict[str, str | int]:
    params: dict[str, str | int] = {}
    try:
        parsed = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as e:
        raise ConfigError(f"bad S3 URL query {query!r}: {e}") from None
    for key, values in parsed.items():
        kind = _S3_PARAMS.get(key)
        if kind is None:
            raise ConfigError(f"unknown S3 URL parameter {key!r}; known: {', '.join(_S3_PARAMS)}")
        try:
            params[key] = kind(values[-1])
        except ValueError:
            raise ConfigError(f"S3 URL parameter {key}={values[-1]!r} is not an integer") from None
    return params


def _redact(text: str) -> str:
    return text.split("?", 1)[0]
