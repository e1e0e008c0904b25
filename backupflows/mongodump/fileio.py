"""Opening dump files for streaming, and writing them atomically."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from backupflows.mongodump.errors import DumpFormatError

BUFFER = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
GZIP_LEVEL = 6  # Go's compress/gzip DefaultCompression
READ_ERRORS = (OSError, EOFError, zlib.error)


def open_read(path: Path, compressed: bool) -> BinaryIO:
    """A buffered binary stream of the file's (uncompressed) bytes."""
    try:
        raw = open(path, "rb", buffering=BUFFER)  # noqa: SIM115 - returned to the caller
    except OSError as exc:
        raise DumpFormatError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    if not compressed:
        return raw
    return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), BUFFER)  # type: ignore[arg-type]


def is_gzip_file(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def read_text(path: Path) -> bytes:
    """A whole small file (metadata), gunzipped when its name ends in ``.gz``."""
    try:
        with open_read(path, path.name.endswith(".gz")) as stream:
            return stream.read()
    except DumpFormatError:
        raise
    except READ_ERRORS as exc:
        raise DumpFormatError(f"{path}: cannot read: {exc}") from exc


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: Path, compressed: bool = False, fsync: bool = True) -> Iterator[BinaryIO]:
    """Write ``path`` under a temporary name, fsync it, then rename it.

    Readers see either the previous file or the complete new one; a failure
    (or a crash) leaves at most a hidden ``.tmp-*`` file, which
    readers skip.
    """
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:16]}")  # short: names may be 255 bytes
    raw = open(tmp, "wb", buffering=BUFFER)  # noqa: SIM115 - closed below
    try:
        if compressed:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                               compresslevel=GZIP_LEVEL, mtime=0) as zipped:
                yield zipped  # type: ignore[misc]
        else:
            yield raw
        raw.flush()
        if fsync:
            os.fsync(raw.fileno())
        raw.close()
        os.replace(tmp, path)
    except BaseException:
        raw.close()
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)
