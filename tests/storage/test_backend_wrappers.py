"""Wrappers (retries, fault injection, counting, logging) and the crash
safety of filesystem writes, with real process deaths."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupflows.errors import IntegrityError, StorageError
from backupflows.storage import container
from backupflows.storage.backends import (
    InvalidObjectName,
    ObjectInfo,
    ObjectNotFound,
    TransientStorageError,
    open_backend,
)
from backupflows.storage.backends.filesystem import TEMP_PREFIX, FilesystemBackend
from backupflows.storage.backends.wrappers import (
    BackendWrapper,
    CountingBackend,
    FaultInjectingBackend,
    LoggingBackend,
    RetriesExhausted,
    RetryingBackend,
    RetryPolicy,
    unwrap,
)
from tests.storage.backend_conformance import BackendConformance, pattern

POLICY = RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=0.3, max_elapsed=60)


@pytest.fixture
def faulty(tmp_path: Path) -> FaultInjectingBackend:
    return FaultInjectingBackend(FilesystemBackend(tmp_path / "store"))


def retrying(inner: FaultInjectingBackend | BackendWrapper, sleeps: list[float],
             policy: RetryPolicy = POLICY, **kw: object) -> RetryingBackend:
    return RetryingBackend(inner, policy, sleep=sleeps.append, **kw)  # type: ignore[arg-type]


class TestWrappedConformance(BackendConformance):
    """The whole stack the factory builds still honours every contract."""

    @pytest.fixture
    def backend(self, tmp_path: Path) -> RetryingBackend:
        return RetryingBackend(LoggingBackend(CountingBackend(FaultInjectingBackend(
            FilesystemBackend(tmp_path / "store")))))


# ---- retries -------------------------------------------------------------------


def test_transient_errors_are_retried_with_growing_backoff(faulty: FaultInjectingBackend) -> None:
    faulty.put("obj", b"payload")
    faulty.fail("get", on_call=1, times=3)
    sleeps: list[float] = []
    backend = retrying(faulty, sleeps)
    assert backend.get("obj") == b"payload"
    assert faulty.calls["get"] == 4
    assert backend.retries == 3
    for retry, wait in enumerate(sleeps, start=1):
        ceiling = min(POLICY.max_delay, POLICY.base_delay * 2 ** (retry - 1))
        assert ceiling / 2 <= wait <= ceiling
    assert sleeps[0] <= 0.1 <= sleeps[1]  # the wait doubles from one retry to the next


@pytest.mark.parametrize("error", [ConnectionResetError("reset by peer"),
                                   TimeoutError("timed out"),
                                   TransientStorageError("503 SlowDown")])
def test_every_transient_kind_is_retried(faulty: FaultInjectingBackend,
                                         error: Exception) -> None:
    faulty.put("obj", b"x")
    faulty.fail("stat", error=error)
    sleeps: list[float] = []
    assert retrying(faulty, sleeps).stat("obj").size == 1
    assert len(sleeps) == 1


def test_permanent_errors_are_not_retried(faulty: FaultInjectingBackend) -> None:
    sleeps: list[float] = []
    backend = retrying(faulty, sleeps)
    faulty.fail("put", error=StorageError("disk full"))
    with pytest.raises(StorageError, match="disk full") as info:
        backend.put("x", b"1")
    assert not isinstance(info.value, RetriesExhausted)
    assert faulty.calls["put"] == 1
    with pytest.raises(ObjectNotFound):
        backend.get("missing")
    assert faulty.calls["get"] == 1
    with pytest.raises(InvalidObjectName):
        backend.get("../etc/passwd")
    assert faulty.calls["get"] == 1  # rejected before reaching the backend
    assert sleeps == [] and backend.retries == 0


def test_attempts_are_bounded(faulty: FaultInjectingBackend) -> None:
    faulty.put("obj", b"x")
    faulty.fail("get", times=None)
    sleeps: list[float] = []
    with pytest.raises(RetriesExhausted, match="gave up after 4 attempt") as info:
        retrying(faulty, sleeps).get("obj")
    assert isinstance(info.value.__cause__, TransientStorageError)
    assert faulty.calls["get"] == POLICY.max_attempts
    assert len(sleeps) == POLICY.max_attempts - 1


def test_retry_time_is_bounded(faulty: FaultInjectingBackend) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    faulty.fail("delete", times=None)
    policy = RetryPolicy(max_attempts=1000, base_delay=1.0, max_delay=8.0, max_elapsed=30.0)
    backend = RetryingBackend(faulty, policy, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(RetriesExhausted):
        backend.delete("obj")
    assert now[0] <= 30.0
    assert 4 <= faulty.calls["delete"] < 20


def test_put_stream_retries_only_when_safe(faulty: FaultInjectingBackend) -> None:
    sleeps: list[float] = []
    backend = retrying(faulty, sleeps)
    # failure before the stream was read: even a one-shot generator is retried
    faulty.fail("put_stream", on_call=1)
    backend.put_stream("a", (c for c in [b"x", b"y"]))
    assert backend.get("a") == b"xy" and faulty.calls["put_stream"] == 2
    # failure after the stream was consumed: a list can be sent again...
    faulty.fail("put_stream", on_call=3, after=True)
    backend.put_stream("b", [b"1", b"2"])
    assert backend.get("b") == b"12" and faulty.calls["put_stream"] == 4
    # ...a consumed generator cannot: the error reaches the caller
    faulty.fail("put_stream", on_call=5, after=True)
    with pytest.raises(TransientStorageError):
        backend.put_stream("c", (c for c in [b"1", b"2"]))
    assert faulty.calls["put_stream"] == 5


class _FlakyList(BackendWrapper):
    """Breaks the first listing after ``after`` items."""

    def __init__(self, inner: FilesystemBackend, after: int) -> None:
        super().__init__(inner)
        self.after, self.broken, self.starts = after, False, []

    def _list(self, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
        self.starts.append(start_after)
        for n, info in enumerate(self.inner.list(prefix, start_after=start_after)):
            if n == self.after and not self.broken:
                self.broken = True
                raise ConnectionResetError("listing connection dropped")
            yield info


def test_list_resumes_after_the_last_name(tmp_path: Path) -> None:
    inner = FilesystemBackend(tmp_path)
    all_names = [f"seg/{i:03d}" for i in range(30)]
    for name in all_names:
        inner.put(name, b"")
    flaky = _FlakyList(inner, after=12)
    sleeps: list[float] = []
    assert [i.name for i in retrying(flaky, sleeps).list("seg/")] == all_names
    assert flaky.starts == [None, "seg/011"]


def test_factory_puts_injected_faults_under_the_retries(tmp_path: Path) -> None:
    backend = open_backend(tmp_path, retry=RetryPolicy(base_delay=0.001, max_delay=0.002),
                           wrap=[FaultInjectingBackend])
    faults = backend.inner
    assert isinstance(faults, FaultInjectingBackend)
    faults.fail("put", times=2)
    backend.put("x", b"ok")
    assert backend.get("x") == b"ok" and faults.calls["put"] == 3
    assert isinstance(unwrap(backend), FilesystemBackend)
    assert backend.cleanup_temp(0) == 0  # the inner backend's own methods show through


# ---- corruption, counting, logging ---------------------------------------------


def test_corrupted_reads_are_caught_by_the_envelope(faulty: FaultInjectingBackend) -> None:
    blob = container.pack(b"BLCK", {"n": 1}, pattern(50_000))
    faulty.put("blocks/ab/cd", blob)
    faulty.corrupt("blocks/ab/cd", times=2)
    damaged = faulty.get("blocks/ab/cd")
    assert len(damaged) == len(blob) and damaged != blob
    with pytest.raises(IntegrityError):
        container.unpack(faulty.get("blocks/ab/cd"))
    assert container.unpack(faulty.get("blocks/ab/cd"))[1] == pattern(50_000)  # times exhausted
    faulty.corrupt()  # every read of every object
    with faulty.open_read("blocks/ab/cd") as stream:
        assert stream.read() != blob
    assert faulty.get_range("blocks/ab/cd", 0, 10) != blob[:10]


def test_fault_injection_rejects_unknown_methods(faulty: FaultInjectingBackend) -> None:
    with pytest.raises(ValueError, match="unknown backend method"):
        faulty.fail("gett")


def test_counting_backend(tmp_path: Path) -> None:
    backend = CountingBackend(FilesystemBackend(tmp_path))
    backend.put("a", b"12345")
    backend.put_stream("b", iter([b"12", b"345", b"6"]))
    backend.get("a")
    backend.get_range("b", 1, 2)
    list(backend.list())
    backend.exists("zzz")
    assert backend.bytes_written == 11 and backend.bytes_read == 7
    assert backend.calls == {"put": 1, "put_stream": 1, "get": 1, "get_range": 1,
                             "list": 1, "stat": 1}


def test_logging_backend(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend = LoggingBackend(FilesystemBackend(tmp_path))
    with caplog.at_level(logging.DEBUG, logger="backupflows.storage.backends.wrappers"):
        backend.put("seg/1", b"x")
        with pytest.raises(ObjectNotFound):
            backend.get("seg/2")
    text = caplog.text
    assert "put 'seg/1'" in text and "get 'seg/2' failed" in text


# ---- crash safety of the filesystem backend ------------------------------------

_CRASH_BEFORE_RENAME = textwrap.dedent("""
    import os, sys
    from backupflows.storage.backends.filesystem import FilesystemBackend
    backend = FilesystemBackend(sys.argv[1])
    os.replace = lambda *a, **k: os._exit(9)   # the process dies between fsync and rename
    backend.put(sys.argv[2], b"N" * 3_000_000)
""")

_SLOW_STREAM = textwrap.dedent("""
    import sys, time
    from backupflows.storage.backends.filesystem import FilesystemBackend
    def chunks():
        for i in range(1000):
            yield b"N" * 100_000
            if i == 5:
                print("writing", flush=True)
                time.sleep(60)
    FilesystemBackend(sys.argv[1]).put_stream(sys.argv[2], chunks())
""")


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"{TEMP_PREFIX}*")]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))


@pytest.mark.parametrize("name", ["slices/job1/0007", "new/dir/object"])
def test_crash_between_write_and_rename_leaves_no_partial_object(tmp_path: Path,
                                                                 name: str) -> None:
    backend = FilesystemBackend(tmp_path)
    if name.startswith("slices"):
        backend.put(name, b"old complete version")
    before = [(i.name, i.size) for i in backend.list()]
    proc = subprocess.run([sys.executable, "-c", _CRASH_BEFORE_RENAME, str(tmp_path), name],
                          env=_env(), timeout=60)
    assert proc.returncode == 9
    assert len(_temp_files(tmp_path)) == 1 and _temp_files(tmp_path)[0].stat().st_size == 3_000_000
    assert [(i.name, i.size) for i in backend.list()] == before
    if before:
        assert backend.get(name) == b"old complete version"
    else:
        with pytest.raises(ObjectNotFound):
            backend.get(name)
    assert backend.cleanup_temp(older_than=0) == 1
    assert _temp_files(tmp_path) == []


def test_kill_9_during_a_stream_leaves_the_old_object(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path)
    backend.put("oplog/seg", b"old")
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_STREAM, str(tmp_path), "oplog/seg"],
                            env=_env(), stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"writing\n"
        temps = _temp_files(tmp_path)
        deadline = time.monotonic() + 10
        while (not temps or temps[0].stat().st_size < 600_000) and time.monotonic() < deadline:
            time.sleep(0.01)
            temps = _temp_files(tmp_path)
        assert temps and temps[0].stat().st_size >= 600_000  # half-written, on disk
        assert backend.get("oplog/seg") == b"old"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert backend.get("oplog/seg") == b"old"
    assert [(i.name, i.size) for i in backend.list()] == [("oplog/seg", 3)]
    assert backend.cleanup_temp(older_than=0) == 1
