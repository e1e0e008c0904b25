"""Behaviour added around any backend: retries, fault injection (tests),
counting and logging. A wrapper is itself a ``Backend``, so wrappers stack:
``RetryingBackend(LoggingBackend(S3Backend(...)))``.
"""

from __future__ import annotations

import io
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from backupflows.errors import StorageError
from backupflows.storage.backends.base import (
    Backend,
    CheckedChunks,
    ObjectInfo,
    TransientStorageError,
    _Bytes,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


class BackendWrapper(Backend):
    """Delegates every primitive to ``inner``'s public method. Attributes a
    wrapper does not have (``cleanup_temp``, ``root``, ...) are the inner's."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.url = inner.url

    def __getattr__(self, attr: str) -> Any:
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.inner!r}>"

    def close(self) -> None:
        self.inner.close()

    def _put(self, name: str, data: _Bytes) -> None:
        self.inner.put(name, data)

    def _put_stream(self, name: str, chunks: CheckedChunks) -> None:
        self.inner.put_stream(name, chunks)

    def _get(self, name: str) -> bytes:
        return self.inner.get(name)

    def _get_range(self, name: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(name, offset, length)

    def _open_read(self, name: str) -> BinaryIO:
        return self.inner.open_read(name)

    def _list(self, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix, start_after=start_after)

    def _delete(self, name: str) -> None:
        self.inner.delete(name)

    def _stat(self, name: str) -> ObjectInfo:
        return self.inner.stat(name)


def unwrap(backend: Backend) -> Backend:
    """The innermost backend under any wrappers."""
    while isinstance(backend, BackendWrapper):
        backend = backend.inner
    return backend


# ---- retries -------------------------------------------------------------------


class RetriesExhausted(StorageError):
    """A transient failure persisted through every allowed attempt."""


def is_transient(error: BaseException) -> bool:
    """Whether retrying ``error`` may succeed. Missing objects, bad names and
    other ``StorageError``s are permanent."""
    return isinstance(error, TransientStorageError | ConnectionError | TimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: before retry ``n`` (1-based) wait
    between half and all of ``min(max_delay, base_delay * 2**(n-1))``; stop
    after ``max_attempts`` attempts or when the next wait would pass
    ``max_elapsed`` seconds since the first attempt."""

    max_attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 10.0
    max_elapsed: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_elapsed < 0:
            raise ValueError("retry delays must not be negative")

    def delay(self, retry: int, rng: random.Random) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


class _Attempts:
    """Counts the failed attempts of one operation and waits between them."""

    def __init__(self, owner: RetryingBackend, op: str) -> None:
        self.owner, self.op = owner, op
        self.failures = 0
        self.started = owner.clock()

    def backoff(self, error: BaseException) -> None:
        """Wait before the next attempt, or raise if ``error`` is permanent
        or the policy allows no more attempts."""
        if not is_transient(error):
            raise error
        policy = self.owner.policy
        self.failures += 1
        wait = policy.delay(self.failures, self.owner.rng)
        elapsed = self.owner.clock() - self.started
        if self.failures >= policy.max_attempts or elapsed + wait > policy.max_elapsed:
            raise RetriesExhausted(
                f"{self.op}: gave up after {self.failures} attempt(s) in {elapsed:.1f} s: "
                f"{error}") from error
        log.warning("%s failed (attempt %d/%d), retrying in %.2f s: %s", self.op,
                    self.failures, policy.max_attempts, wait, error)
        with self.owner.lock:
            self.owner.retries += 1
        self.owner.sleep(wait)


class _Tap(CheckedChunks):
    """The same chunks (and the same replayability), calling ``seen`` with
    each chunk as it is taken."""

    def __init__(self, chunks: CheckedChunks, seen: Callable[[_Bytes], None]) -> None:
        self.chunks, self.replayable, self.seen = chunks, chunks.replayable, seen
        self.taken = 0

    def __iter__(self) -> Iterator[_Bytes]:
        for chunk in self.chunks:
            self.taken += 1
            self.seen(chunk)
            yield chunk


def _ignore(_chunk: _Bytes) -> None:
    return None


class RetryingBackend(BackendWrapper):
    """Retries transient failures (connection errors, timeouts, 5xx,
    throttling) with exponential backoff and jitter; never retries a missing
    object, a bad name or another permanent error.

    ``put_stream`` is retried when its chunks can be read again (a list, or
    an iterable that is not an iterator), or when the failure came before the
    first chunk was taken; a one-shot iterator that was partly consumed is not
    retried. ``list`` resumes after the last name it yielded. ``open_read``
    retries opening the stream, not reads from it.
    """

    def __init__(self, inner: Backend, policy: RetryPolicy | None = None, *,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        super().__init__(inner)
        self.policy = policy or RetryPolicy()
        self.sleep, self.clock = sleep, clock
        self.rng = rng or random.Random()
        self.lock = threading.Lock()
        self.retries = 0  # total retries done, for monitoring

    def _call(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        attempts = _Attempts(self, op)
        while True:
            try:
                return fn(*args)
            except Exception as e:  # noqa: BLE001 - classified by backoff()
                attempts.backoff(e)

    def _put(self, name: str, data: _Bytes) -> None:
        self._call(f"put {name!r}", self.inner.put, name, data)

    def _put_stream(self, name: str, chunks: CheckedChunks) -> None:
        attempts = _Attempts(self, f"put_stream {name!r}")
        while True:
            tap = _Tap(chunks, _ignore)
            try:
                return self.inner.put_stream(name, tap)
            except Exception as e:  # noqa: BLE001
                if tap.taken and not chunks.replayable:
                    raise
                attempts.backoff(e)

    def _get(self, name: str) -> bytes:
        return self._call(f"get {name!r}", self.inner.get, name)

    def _get_range(self, name: str, offset: int, length: int) -> bytes:
        return self._call(f"get_range {name!r}", self.inner.get_range, name, offset, length)

    def _open_read(self, name: str) -> BinaryIO:
        return self._call(f"open_read {name!r}", self.inner.open_read, name)

    def _delete(self, name: str) -> None:
        self._call(f"delete {name!r}", self.inner.delete, name)

    def _stat(self, name: str) -> ObjectInfo:
        return self._call(f"stat {name!r}", self.inner.stat, name)

    def _list(self, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
        attempts = _Attempts(self, f"list {prefix!r}")
        last = start_after
        while True:
            try:
                for info in self.inner.list(prefix, start_after=last):
                    yield info
                    last = info.name
                return
            except Exception as e:  # noqa: BLE001
                attempts.backoff(e)


# ---- fault injection (tests) ---------------------------------------------------

METHODS = ("put", "put_stream", "get", "get_range", "open_read", "list", "delete", "stat")


@dataclass
class _Fault:
    method: str
    first: int
    last: float  # inclusive call number; inf = forever
    error: Callable[[], BaseException]
    after: bool  # raise after the inner call ran (a lost answer)


class FaultInjectingBackend(BackendWrapper):
    """Fails chosen calls and corrupts chosen reads, to drive fault tests.

    ``fail("get", on_call=2, times=3)`` makes calls 2, 3 and 4 of ``get``
    (counted at this wrapper) raise a ``TransientStorageError`` (or
    ``error``). With ``after=True`` the inner call runs first and then the
    error is raised, like an answer lost on the way back.
    ``corrupt(name)`` flips one byte of what reads of ``name`` return.
    """

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self._faults: list[_Fault] = []
        self._corrupt: dict[str | None, float] = {}
        self._lock = threading.Lock()

    def fail(self, method: str, *, on_call: int = 1, times: int | None = 1,
             error: BaseException | Callable[[], BaseException] | None = None,
             after: bool = False) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown backend method {method!r}; one of {', '.join(METHODS)}")
        if on_call < 1 or (times is not None and times < 1):
            raise ValueError("on_call and times must be at least 1")
        if error is None:
            make: Callable[[], BaseException] = lambda: TransientStorageError(  # noqa: E731
                f"injected fault in {method}")
        elif isinstance(error, BaseException):
            make = lambda: error  # noqa: E731
        else:
            make = error
        last = float("inf") if times is None else on_call + times - 1
        with self._lock:
            self._faults.append(_Fault(method, on_call, last, make, after))

    def corrupt(self, name: str | None = None, *, times: int | None = None) -> None:
        """Corrupt the next ``times`` reads (all, if None) of ``name`` (any, if None)."""
        with self._lock:
            self._corrupt[name] = float("inf") if times is None else times

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._corrupt.clear()

    def _enter(self, method: str) -> _Fault | None:
        with self._lock:
            self.calls[method] += 1
            n = self.calls[method]
            for fault in self._faults:
                if fault.method == method and fault.first <= n <= fault.last:
                    if not fault.after:
                        raise fault.error()
                    return fault
        return None

    def _invoke(self, method: str, fn: Callable[..., T], *args: Any) -> T:
        fault = self._enter(method)
        result = fn(*args)
        if fault is not None:
            raise fault.error()
        return result

    def _damage(self, name: str, data: bytes) -> bytes:
        if not data:
            return data
        with self._lock:
            key = next((k for k in (name, None) if self._corrupt.get(k, 0) > 0), False)
            if key is False:
                return data
            self._corrupt[key] -= 1
        i = len(data) // 2
        return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]

    def _put(self, name: str, data: _Bytes) -> None:
        self._invoke("put", self.inner.put, name, data)

    def _put_stream(self, name: str, chunks: CheckedChunks) -> None:
        self._invoke("put_stream", self.inner.put_stream, name, chunks)

    def _get(self, name: str) -> bytes:
        return self._damage(name, self._invoke("get", self.inner.get, name))

    def _get_range(self, name: str, offset: int, length: int) -> bytes:
        data = self._invoke("get_range", self.inner.get_range, name, offset, length)
        return self._damage(name, data)

    def _open_read(self, name: str) -> BinaryIO:
        stream = self._invoke("open_read", self.inner.open_read, name)
        if not self._corrupt:
            return stream
        with stream:
            return io.BytesIO(self._damage(name, stream.read()))

    def _list(self, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
        fault = self._enter("list")
        yield from self.inner.list(prefix, start_after=start_after)
        if fault is not None:
            raise fault.error()

    def _delete(self, name: str) -> None:
        self._invoke("delete", self.inner.delete, name)

    def _stat(self, name: str) -> ObjectInfo:
        return self._invoke("stat", self.inner.stat, name)


# ---- counting and logging ------------------------------------------------------


class CountingBackend(BackendWrapper):
    """Counts calls per method and bytes written and read (thread-safe)."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.bytes_written = 0
        self.bytes_read = 0
        self._lock = threading.Lock()

    def _count(self, method: str, written: int = 0, read: int = 0) -> None:
        with self._lock:
            self.calls[method] += 1
            self.bytes_written += written
            self.bytes_read += read

    def _put(self, name: str, data: _Bytes) -> None:
        self.inner.put(name, data)
        self._count("put", written=len(data))

    def _put_stream(self, name: str, chunks: CheckedChunks) -> None:
        def seen(chunk: _Bytes) -> None:
            with self._lock:
                self.bytes_written += len(chunk)

        self.inner.put_stream(name, _Tap(chunks, seen))
        self._count("put_stream")

    def _get(self, name: str) -> bytes:
        data = self.inner.get(name)
        self._count("get", read=len(data))
        return data

    def _get_range(self, name: str, offset: int, length: int) -> bytes:
        data = self.inner.get_range(name, offset, length)
        self._count("get_range", read=len(data))
        return data

    def _open_read(self, name: str) -> BinaryIO:
        self._count("open_read")
        return self.inner.open_read(name)

    def _list(self, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
        self._count("list")
        return self.inner.list(prefix, start_after=start_after)

    def _delete(self, name: str) -> None:
        self._count("delete")
        self.inner.delete(name)

    def _stat(self, name: str) -> ObjectInfo:
        self._count("stat")
        return self.inner.stat(name)


class LoggingBackend(BackendWrapper):
    """Logs every operation with its duration (DEBUG) and failures (INFO)."""

    def __init__(self, inner: Backend, logger: logging.Logger | None = None) -> None:
        super().__init__(inner)
        self.log = logger or log

    def _timed(self, op: str, name: str, fn: Callable[..., T], *args: Any) -> T:
        start = time.perf_counter()
        try:
            result = fn(*args)
        except Exception as e:
            self.log.info("%s %s %r failed after %.3f s: %s", self.url, op, name,
                          time.perf_counter() - start, e)
            raise
        self.log.debug("%s %s %r %.3f s", self.url, op, name, time.perf_counter() - start)
        return result

    def _put(self, name: str, data: _Bytes) -> None:
        self._timed("put", name, self.inner.put, name, data)

    def _put_stream(self, name: str, chunks: CheckedChunks) -> None:
        self._timed("put_stream", name, self.inner.put_stream, name, chunks)

    def _get(self, name: str) -> bytes:
        return self._timed("get", name, self.inner.get, name)

    def _get_range(self, name: str, offset: int, length: int) -> bytes:
        return self._timed("get_range", name, self.inner.get_range, name, offset, length)

    def _open_read(self, name: str) -> BinaryIO:
        return self._timed("open_read", name, self.inner.open_read, name)

    def _delete(self, name: str) -> None:
        self._timed("delete", name, self.inner.delete, name)

    def _stat(self, name: str) -> ObjectInfo:
        return self._timed("stat", name, self.inner.stat, name)
