"""Content hashes of restore streams on helper processes.

Hashing every document (BLAKE2b of a few hundred bytes) holds the GIL, so on
one interpreter it caps a restore at one core. A ``HashPool`` runs
``hashworker`` processes (started with ``subprocess``: Celery's pool
processes may not fork ``multiprocessing`` children) and hands them whole
chunks (a full layer's blocks); each process has a writer and a reader
thread on its side, so the restore thread never waits for a hash while it
writes. At most ``in_flight`` chunks per process wait; memory stays bounded.
"""

from __future__ import annotations

import os
import queue
import struct
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import IO

from backupflows.errors import RestoreError
from backupflows.restore import hashworker

_U32 = struct.Struct("<I")
Result = tuple[int, int]  # (documents, digest sum)


class _Helper:
    def __init__(self, in_flight: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-I", hashworker.__file__],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, bufsize=0)
        self.todo: queue.Queue[tuple[bytes, Future[Result]] | None] = queue.Queue()
        self.waiting: queue.Queue[Future[Result]] = queue.Queue()
        self.slots = threading.Semaphore(in_flight)
        self.threads = [threading.Thread(target=self._write, daemon=True),
                        threading.Thread(target=self._read, daemon=True)]
        for t in self.threads:
            t.start()

    def submit(self, data: bytes) -> Future[Result]:
        self.slots.acquire()
        fut: Future[Result] = Future()
        self.todo.put((data, fut))
        return fut

    def _write(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        while (item := self.todo.get()) is not None:
            data, fut = item
            self.waiting.put(fut)
            try:
                stdin.write(_U32.pack(len(data)))
                stdin.write(data)
            except OSError as exc:
                self._fail_all(exc)
                return
        try:
            stdin.write(_U32.pack(0))
            stdin.close()
        except OSError:
            pass

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        while True:
            fut = self.waiting.get()
            if fut is None:  # type: ignore[comparison-overlap]
                return
            try:
                tag = _exact(stdout, 1)
                if tag == b"K":
                    body = _exact(stdout, 36)
                    fut.set_result((_U32.unpack_from(body)[0], int.from_bytes(body[4:], "big")))
                else:
                    body = _exact(stdout, 8)
                    pos, size = struct.unpack("<Ii", body)
                    fut.set_exception(RestoreError(f"bad document length {size} at offset {pos}"))
            except OSError as exc:
                fut.set_exception(RestoreError(f"hash helper failed: {exc}"))
            finally:
                self.slots.release()

    def _fail_all(self, exc: Exception) -> None:
        while True:
            try:
                fut = self.waiting.get_nowait()
            except queue.Empty:
                return
            if not fut.done():
                fut.set_exception(RestoreError(f"hash helper failed: {exc}"))

    def close(self) -> None:
        self.todo.put(None)
        self.waiting.put(None)  # type: ignore[arg-type]
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _exact(stream: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            raise OSError("hash helper exited")
        data += more
    return data


class HashPool:
    """``workers`` helper processes; ``submit`` spreads chunks round robin."""

    def __init__(self, workers: int | None = None, in_flight: int = 3) -> None:
        n = workers if workers is not None else min(os.cpu_count() or 1, 4)
        self.helpers = [_Helper(in_flight) for _ in range(max(1, n))]
        self._next = 0

    def submit(self, data: bytes) -> Future[Result]:
        helper = self.helpers[self._next]
        self._next = (self._next + 1) % len(self.helpers)
        return helper.submit(data)

    def close(self) -> None:
        for h in self.helpers:
            h.close()

    def __enter__(self) -> HashPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
