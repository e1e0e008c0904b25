"""The one conformance suite every object store backend must pass.

Use: subclass ``BackendConformance`` in a ``test_*.py`` file and give it a
``backend`` fixture that returns a fresh, empty backend (see
``test_backend_filesystem.py``). Set ``stream_size`` above the backend's
multipart threshold so the multipart path runs.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from backupflows.errors import StorageError
from backupflows.storage.backends.base import (
    Backend,
    InvalidObjectName,
    ObjectNotFound,
    TransientStorageError,
)

MiB = 1024 * 1024

BAD_NAMES = ["", "/abs", "a//b", "a/", "..", ".", "a/../b", "a/./b", "../x", "a/..",
             "a\\b", "a\x00b", "line\nbreak", ".bf-tmp-123", "d/.bf-tmp", "x" * 256,
             "/".join(["y" * 200] * 6)]
BAD_PREFIXES = ["/", "/a", "a//", "../", "a/../", "..", "a\\", ".bf-tmp"]


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible-looking bytes, so offsets are checkable."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.blake2b(f"{seed}:{counter}".encode(), digest_size=64).digest()
        counter += 1
    return bytes(out[:size])


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def names(backend: Backend, prefix: str = "", **kw: str) -> list[str]:
    return [info.name for info in backend.list(prefix, **kw)]


class BackendConformance:
    """Behaviour every backend owes its callers (slices, segments, blocks)."""

    #: size of the large streamed object (above the multipart threshold)
    stream_size = 12 * MiB

    # ---- round trips -----------------------------------------------------------

    def test_round_trip_small_and_empty(self, backend: Backend) -> None:
        backend.put("empty", b"")
        backend.put("small/one", b"hello")
        assert backend.get("empty") == b""
        assert backend.get("small/one") == b"hello"
        assert backend.stat("empty").size == 0
        assert backend.stat("small/one").size == 5

    def test_round_trip_10_mb(self, backend: Backend) -> None:
        data = pattern(10 * MiB, seed=1)
        backend.put("big/object", data)
        assert backend.get("big/object") == data
        assert backend.stat("big/object").size == len(data)
        with backend.open_read("big/object") as stream:
            parts = []
            while part := stream.read(MiB + 7):
                parts.append(part)
        assert b"".join(parts) == data

    def test_overwrite_replaces_content_and_size(self, backend: Backend) -> None:
        backend.put("obj", b"first version, rather long")
        backend.put("obj", b"second")
        assert backend.get("obj") == b"second"
        assert backend.stat("obj").size == 6
        assert names(backend) == ["obj"]

    def test_put_accepts_bytes_like_and_rejects_others(self, backend: Backend) -> None:
        backend.put("ba", bytearray(b"xy"))
        backend.put("mv", memoryview(b"abcdef")[2:4])
        assert backend.get("ba") == b"xy" and backend.get("mv") == b"cd"
        with pytest.raises(TypeError):
            backend.put("s", "text")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            backend.put_stream("s", b"a whole buffer")
        with pytest.raises(TypeError):
            backend.put_stream("s", [b"ok", "not bytes"])  # type: ignore[list-item]
        assert not backend.exists("s")

    # ---- streams ---------------------------------------------------------------

    def test_put_stream_many_small_chunks(self, backend: Backend) -> None:
        chunks = [pattern(i % 97, seed=i) for i in range(3000)]  # includes empty chunks
        backend.put_stream("stream/many", iter(chunks))
        assert backend.get("stream/many") == b"".join(chunks)

    def test_put_stream_large_object(self, backend: Backend) -> None:
        data = pattern(self.stream_size, seed=2)
        backend.put_stream("stream/large", chunked(data, 256 * 1024 + 3))
        assert backend.stat("stream/large").size == len(data)
        assert backend.get("stream/large") == data
        edge = 5 * MiB  # S3's minimum part size: a part boundary for most settings
        assert backend.get_range("stream/large", edge - 2, 4) == data[edge - 2:edge + 2]

    def test_put_stream_empty(self, backend: Backend) -> None:
        backend.put_stream("stream/empty", iter(()))
        assert backend.get("stream/empty") == b""

    def test_failing_stream_leaves_no_object(self, backend: Backend) -> None:
        def failing() -> Iterator[bytes]:
            yield from chunked(pattern(self.stream_size // 2 + MiB, seed=3), MiB)
            raise RuntimeError("source went away")

        with pytest.raises(RuntimeError, match="source went away"):
            backend.put_stream("stream/failed", failing())
        assert not backend.exists("stream/failed")
        assert names(backend) == []
        backend.put("stream/kept", b"old")
        with pytest.raises(RuntimeError):
            backend.put_stream("stream/kept", failing())
        assert backend.get("stream/kept") == b"old"

    # ---- ranges and streams ----------------------------------------------------

    def test_get_range_edges(self, backend: Backend) -> None:
        data = pattern(1000, seed=4)
        backend.put("r", data)
        backend.put("r-empty", b"")
        assert backend.get_range("r", 0, 1000) == data
        assert backend.get_range("r", 0, 1) == data[:1]
        assert backend.get_range("r", 10, 90) == data[10:100]
        assert backend.get_range("r", 999, 1) == data[999:]
        assert backend.get_range("r", 990, 100) == data[990:]  # truncated at the end
        assert backend.get_range("r", 1000, 5) == b""  # at the end
        assert backend.get_range("r", 5000, 5) == b""  # past the end
        assert backend.get_range("r", 10, 0) == b""
        assert backend.get_range("r-empty", 0, 10) == b""
        with pytest.raises(ValueError):
            backend.get_range("r", -1, 5)
        with pytest.raises(ValueError):
            backend.get_range("r", 0, -5)

    def test_open_read_is_a_binary_stream(self, backend: Backend) -> None:
        data = pattern(300_000, seed=5)
        backend.put("s/o", data)
        with backend.open_read("s/o") as stream:
            assert stream.read(10) == data[:10]
            assert stream.read() == data[10:]
            assert stream.read(5) == b""
        backend.put("s/empty", b"")
        with backend.open_read("s/empty") as stream:
            assert stream.read() == b""

    # ---- listing ---------------------------------------------------------------

    def test_list_is_sorted_by_name_with_prefixes(self, backend: Backend) -> None:
        all_names = ["a/x", "a.b", "a-b", "a0", "a/b/c", "a/b.c", "ab", "b", "blocks/00/ff",
                     "blocks/0a/01", "blocks/a0/11", "blocks/ab/cd", "Z", "é/ü"]
        for i, name in enumerate(all_names):
            backend.put(name, bytes(i))
        assert names(backend) == sorted(all_names)
        assert names(backend, "a/") == ["a/b.c", "a/b/c", "a/x"]
        assert names(backend, "a") == sorted(n for n in all_names if n.startswith("a"))
        assert names(backend, "blocks/a") == ["blocks/a0/11", "blocks/ab/cd"]
        assert names(backend, "blocks/ab/") == ["blocks/ab/cd"]
        assert names(backend, "a/b/c") == ["a/b/c"]
        assert names(backend, "nothing") == []
        assert names(backend, "nothing/") == []
        assert names(backend, "b") == ["b", "blocks/00/ff", "blocks/0a/01", "blocks/a0/11",
                                       "blocks/ab/cd"]

    def test_list_start_after(self, backend: Backend) -> None:
        for name in ["a/1", "a/2", "a/3", "b/1", "b/2", "c"]:
            backend.put(name, b"")
        assert names(backend, start_after="a/2") == ["a/3", "b/1", "b/2", "c"]
        assert names(backend, start_after="a/zzz") == ["b/1", "b/2", "c"]
        assert names(backend, start_after="a") == ["a/1", "a/2", "a/3", "b/1", "b/2", "c"]
        assert names(backend, "b/", start_after="b/1") == ["b/2"]
        assert names(backend, start_after="c") == []

    def test_list_reports_sizes_and_mtime(self, backend: Backend) -> None:
        before = time.time()
        backend.put("m/one", b"x" * 123)
        backend.put("m/two", b"")
        infos = list(backend.list("m/"))
        assert [(i.name, i.size) for i in infos] == [("m/one", 123), ("m/two", 0)]
        for info in infos:
            assert before - 120 < info.mtime < time.time() + 120
            assert backend.stat(info.name).size == info.size

    def test_list_more_than_1000_objects(self, backend: Backend) -> None:
        all_names = [f"seg/{i % 3}/{i:05d}" for i in range(1100)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: backend.put(n, n.encode()), all_names))
        listed = names(backend)
        assert listed == sorted(all_names)
        assert names(backend, "seg/1/") == sorted(n for n in all_names if n.startswith("seg/1/"))
        assert len(names(backend, start_after=sorted(all_names)[1049])) == 50

    # ---- delete, stat, errors --------------------------------------------------

    def test_delete_is_idempotent(self, backend: Backend) -> None:
        backend.put("d/x", b"1")
        backend.put("d/y", b"2")
        backend.delete("d/x")
        backend.delete("d/x")
        backend.delete("never/existed")
        assert not backend.exists("d/x")
        with pytest.raises(ObjectNotFound):
            backend.get("d/x")
        assert names(backend) == ["d/y"]
        assert backend.get("d/y") == b"2"
        backend.delete("d/y")
        assert names(backend) == []
        backend.put("d/x", b"again")  # the emptied "directory" is usable again
        assert backend.get("d/x") == b"again"

    def test_stat_and_exists(self, backend: Backend) -> None:
        backend.put("st/a", b"abc")
        info = backend.stat("st/a")
        assert (info.name, info.size) == ("st/a", 3)
        assert backend.exists("st/a")
        assert not backend.exists("st/b")
        assert not backend.exists("st")  # a prefix is not an object

    @pytest.mark.parametrize("method", ["get", "get_range", "open_read", "stat"])
    def test_missing_object_raises_object_not_found(self, backend: Backend, method: str) -> None:
        backend.put("present/x", b"1")
        args: dict[str, tuple[object, ...]] = {"get_range": (0, 10)}
        for missing in ["absent", "present/y", "present"]:
            with pytest.raises(ObjectNotFound) as info:
                getattr(backend, method)(missing, *args.get(method, ()))
            assert isinstance(info.value, StorageError)
            assert repr(missing) in str(info.value)

    @pytest.mark.parametrize("name", BAD_NAMES)
    def test_bad_names_are_rejected(self, backend: Backend, name: str) -> None:
        calls = [lambda: backend.put(name, b"x"), lambda: backend.put_stream(name, [b"x"]),
                 lambda: backend.get(name), lambda: backend.get_range(name, 0, 1),
                 lambda: backend.open_read(name), lambda: backend.stat(name),
                 lambda: backend.exists(name), lambda: backend.delete(name)]
        for call in calls:
            with pytest.raises(InvalidObjectName):
                call()
        assert names(backend) == []

    @pytest.mark.parametrize("prefix", BAD_PREFIXES)
    def test_bad_prefixes_are_rejected(self, backend: Backend, prefix: str) -> None:
        with pytest.raises(InvalidObjectName):
            list(backend.list(prefix))

    def test_unusual_but_valid_names(self, backend: Backend) -> None:
        odd = ["sp ace/x", "pct%20/y", "plus+and&amp", "ünï/cødé", "dots.../..x", "q?x=1#h",
               "emoji/\U0001f600", "tilde~/'quote\""]
        for name in odd:
            backend.put(name, name.encode())
        assert names(backend) == sorted(odd)
        for name in odd:
            assert backend.get(name) == name.encode()

    # ---- concurrency -----------------------------------------------------------

    def test_concurrent_writers_to_different_names(self, backend: Backend) -> None:
        def writer(t: int) -> None:
            for i in range(25):
                backend.put(f"w/{t}/{i:03d}", pattern(1000 + i, seed=t * 100 + i))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(writer, range(8)))
        listed = list(backend.list("w/"))
        assert len(listed) == 200
        for t in range(8):
            for i in range(25):
                assert backend.get(f"w/{t}/{i:03d}") == pattern(1000 + i, seed=t * 100 + i)

    def test_concurrent_put_and_delete_in_one_directory(self, backend: Backend) -> None:
        errors: list[BaseException] = []

        def churn(tag: str) -> None:
            try:
                for i in range(60):
                    backend.put(f"churn/{tag}{i}", b"x")
                    backend.delete(f"churn/{tag}{i}")
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=churn, args=(tag,)) for tag in "abcd"]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        assert names(backend) == []

    def test_reader_never_sees_a_partial_object(self, backend: Backend) -> None:
        sizes = {k: (1 + k % 3) * MiB + k for k in range(1, 13)}
        backend.put("hot", bytes([0]) * MiB)
        sizes[0] = MiB
        done = threading.Event()
        bad: list[str] = []

        def writer() -> None:
            try:
                for k in range(1, 13):
                    data = bytes([k]) * sizes[k]
                    if k % 2:
                        backend.put_stream("hot", chunked(data, 64 * 1024))
                    else:
                        backend.put("hot", data)
            except BaseException as e:  # noqa: BLE001
                bad.append(f"writer failed: {e!r}")
            finally:
                done.set()

        def reader() -> None:
            reads = 0
            while not done.is_set() or reads < 3:
                try:
                    data = backend.get("hot")
                except TransientStorageError:
                    continue  # an error answer is not a partial object; read again
                except BaseException as e:  # noqa: BLE001
                    bad.append(f"reader failed: {e!r}")
                    return
                reads += 1
                k = data[0] if data else -1
                if k not in sizes or len(data) != sizes[k] or data.count(k) != len(data):
                    bad.append(f"read {len(data)} bytes starting with {k}")

        threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader)
                                                        for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert bad == []
        assert backend.get("hot") == bytes([12]) * sizes[12]


__all__ = ["BackendConformance", "MiB", "chunked", "pattern", "names"]
