"""The object store interface: named objects (slices, oplog segments, blocks,
manifests) behind one small API, with a filesystem and an S3 implementation.

Names are ``/``-separated relative keys (``oplog/job-1/000042``). The base
class owns the policy (name validation, argument checks, range semantics);
an implementation writes a few primitives (``_put_stream``, ``_get_range``,
``_open_read``, ``_list``, ``_delete``, ``_stat``). Behaviour such as retries,
fault injection, counting or logging is added by wrappers
(``backends/wrappers.py``), never by flags inside a backend.

Contracts every backend honours (``tests/storage/backend_conformance.py``):

- ``put``/``put_stream`` are atomic: a reader sees the old object, the new
  object or ``ObjectNotFound``, never a partial object; a failed or
  interrupted write leaves no visible object behind.
- ``list`` yields objects sorted by name (code point order, which equals
  S3's UTF-8 byte order), lazily, without holding the listing in memory.
- ``delete`` of a missing object is not an error (idempotent).
- A missing object raises ``ObjectNotFound``; a bad name ``InvalidObjectName``
  before anything is sent or written.
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from backupflows.errors import StorageError

#: Name segments starting with this are reserved for the filesystem backend's
#: temporary files; every backend rejects them so names stay portable.
RESERVED_SEGMENT_PREFIX = ".bf-tmp"
#: Portable limits (S3 keys are at most 1024 bytes; file names 255 bytes).
MAX_NAME_BYTES = 1024
MAX_SEGMENT_BYTES = 255

_Bytes = bytes | bytearray | memoryview


class ObjectNotFound(StorageError):
    """The named object does not exist in the object store."""

    def __init__(self, name: str, where: str = "") -> None:
        self.name = name
        super().__init__(f"object not found: {name!r}" + (f" in {where}" if where else ""))


class InvalidObjectName(StorageError, ValueError):
    """An object name or prefix is not a valid relative '/'-separated key."""


class TransientStorageError(StorageError):
    """A failure that may succeed when retried: a dropped connection, a
    timeout, a 5xx answer, throttling. ``RetryingBackend`` retries only these
    (and the built-in ``ConnectionError``/``TimeoutError``)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What ``stat`` and ``list`` report about one object."""

    name: str
    size: int
    mtime: float  # seconds since the epoch (UTC)


def _check_segments(text: str, segments: list[str], what: str) -> None:
    for seg in segments:
        if seg == "":
            raise InvalidObjectName(f"{what} {text!r} has an empty segment ('//' or a trailing '/')")
        if seg in (".", ".."):
            raise InvalidObjectName(f"{what} {text!r} contains a {seg!r} segment")
        if len(seg.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidObjectName(f"{what} {text!r} has a segment longer than {MAX_SEGMENT_BYTES} bytes")
        if seg.startswith(RESERVED_SEGMENT_PREFIX):
            raise InvalidObjectName(
                f"{what} {text!r}: segments starting with {RESERVED_SEGMENT_PREFIX!r} are reserved")


def _check_text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise InvalidObjectName(f"{what} must be a str, not {type(text).__name__}")
    if text.startswith("/"):
        raise InvalidObjectName(f"{what} {text!r} is absolute; names are relative keys")
    if "\\" in text or any(ord(c) < 0x20 or c == "\x7f" for c in text):
        raise InvalidObjectName(f"{what} {text!r} contains a backslash or a control character")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidObjectName(f"{what} {text!r} is not valid unicode") from None
    if size > MAX_NAME_BYTES:
        raise InvalidObjectName(f"{what} is longer than {MAX_NAME_BYTES} bytes")
    return text


def validate_name(name: object) -> str:
    """``name`` if it is a valid object name, else ``InvalidObjectName``."""
    text = _check_text(name, "object name")
    if text == "":
        raise InvalidObjectName("object name is empty")
    _check_segments(text, text.split("/"), "object name")
    return text


def validate_prefix(prefix: object) -> str:
    """``prefix`` if it is a valid listing prefix ('' lists everything).

    A prefix is a plain string prefix of names, like S3's: ``"oplog/"`` or
    ``"blocks/ab"``; it may end with '/', but has no other empty segment.
    """
    text = _check_text(prefix, "prefix")
    segments = text.split("/")
    if segments and segments[-1] == "":
        segments = segments[:-1]
    if text and not segments:
        raise InvalidObjectName(f"prefix {text!r} has an empty segment")
    _check_segments(text, segments, "prefix")
    return text


def _check_range(offset: int, length: int) -> None:
    if not isinstance(offset, int) or not isinstance(length, int):
        raise TypeError("offset and length must be integers")
    if offset < 0 or length < 0:
        raise ValueError(f"invalid range: offset={offset}, length={length} (must be >= 0)")


class Backend(ABC):
    """A store of named objects. Thread-safe: one instance may be used by
    many threads at once (each worker process opens its own)."""

    #: A human-readable location (URL) for messages.
    url: str = "<backend>"

    # ---- public API (policy) -------------------------------------------------

    def put(self, name: str, data: _Bytes) -> None:
        """Store ``data`` under ``name`` atomically, replacing any old object."""
        name = validate_name(name)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"put() data must be bytes-like, not {type(data).__name__}")
        self._put(name, data)

    def put_stream(self, name: str, chunks: Iterable[_Bytes]) -> None:
        """Store the concatenation of ``chunks`` under ``name`` atomically,
        without holding the whole object in memory. If iterating ``chunks``
        raises, the error propagates and no (new) object becomes visible."""
        name = validate_name(name)
        self._put_stream(name, chunks if isinstance(chunks, CheckedChunks) else CheckedChunks(chunks))

    def get(self, name: str) -> bytes:
        """The whole content of ``name`` (``ObjectNotFound`` if missing)."""
        return self._get(validate_name(name))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of ``name`` from ``offset``: shorter at the
        end of the object, ``b""`` at or past the end (like a file read)."""
        name = validate_name(name)
        _check_range(offset, length)
        return self._get_range(name, offset, length)

    def open_read(self, name: str) -> BinaryIO:
        """A binary stream of ``name`` (close it; usable as a context manager).
        ``ObjectNotFound`` is raised here, not at the first read."""
        return self._open_read(validate_name(name))

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Objects whose name starts with ``prefix``, sorted by name, lazily.
        With ``start_after``, only names strictly greater than it."""
        prefix = validate_prefix(prefix)
        if start_after is not None and not isinstance(start_after, str):
            raise TypeError("start_after must be a str")
        return self._list(prefix, start_after)

    def delete(self, name: str) -> None:
        """Remove ``name``; a missing object is not an error."""
        self._delete(validate_name(name))

    def stat(self, name: str) -> ObjectInfo:
        """Size and modification time of ``name`` (``ObjectNotFound`` if missing)."""
        return self._stat(validate_name(name))

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists."""
        try:
            self.stat(name)
        except ObjectNotFound:
            return False
        return True

    def close(self) -> None:
        """Release connections or handles (the backend is unusable after)."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    # ---- primitives (implementations) ---------------------------------------

    def _put(self, name: str, data: _Bytes) -> None:
        self._put_stream(name, CheckedChunks((data,)))

    @abstractmethod
    def _put_stream(self, name: str, chunks: CheckedChunks) -> None: ...

    def _get(self, name: str) -> bytes:
        with self._open_read(name) as stream:
            return stream.read()

    @abstractmethod
    def _get_range(self, name: str, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def _open_read(self, name: str) -> BinaryIO: ...

    @abstractmethod
    def _list(self, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]: ...

    @abstractmethod
    def _delete(self, name: str) -> None: ...

    @abstractmethod
    def _stat(self, name: str) -> ObjectInfo: ...


class CheckedChunks:
    """The chunks given to ``put_stream``, type-checked as they are read.
    Re-iterable exactly when the original is (a list, a tuple, an object
    whose ``__iter__`` starts over), which tells a retry whether the stream
    can be sent again."""

    def __init__(self, chunks: Iterable[_Bytes]) -> None:
        if isinstance(chunks, bytes | bytearray | memoryview | str):
            raise TypeError("put_stream() takes an iterable of bytes chunks, not a single buffer")
        if not isinstance(chunks, Iterable):
            raise TypeError(f"put_stream() chunks must be iterable, not {type(chunks).__name__}")
        self.chunks = chunks
        self.replayable = not isinstance(chunks, Iterator)

    def __iter__(self) -> Iterator[_Bytes]:
        for chunk in self.chunks:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(f"put_stream() chunks must be bytes-like, not {type(chunk).__name__}")
            yield chunk


class ChunkReader(io.RawIOBase):
    """A raw binary stream over a source with ``read(n)`` (e.g. an HTTP body;
    ``read(None)`` reads to the end), so callers get an ``io.BufferedReader``."""

    def __init__(self, read: Callable[[int | None], bytes],
                 close: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._read = read
        self._close = close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def readall(self) -> bytes:
        """The rest of the stream in one call (``read(None)`` of the source)."""
        return self._read(None)

    def close(self) -> None:
        if not self.closed and self._close is not None:
            self._close()
        super().close()
