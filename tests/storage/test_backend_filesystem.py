"""The filesystem backend: the conformance suite, plus what only a directory
tree has (temporary files, empty directories, file/directory name clashes)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from backupflows.errors import ConfigError, StorageError
from backupflows.storage.backends import RetryingBackend, open_backend, open_raw_backend
from backupflows.storage.backends.filesystem import TEMP_PREFIX, FilesystemBackend
from tests.storage.backend_conformance import BackendConformance


class TestFilesystemConformance(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> FilesystemBackend:
        return FilesystemBackend(tmp_path / "store")


def test_open_backend_paths_and_file_urls(tmp_path: Path) -> None:
    for url in [str(tmp_path / "s"), f"file://{tmp_path}/s", f"file://localhost{tmp_path}/s"]:
        backend = open_backend(url)
        assert isinstance(backend, RetryingBackend)
        backend.put("x/y", b"data")
        assert backend.root == tmp_path / "s"  # attributes of the inner backend show through
    assert (tmp_path / "s" / "x" / "y").read_bytes() == b"data"
    assert open_raw_backend(f"file://{tmp_path}/with%20space").root == tmp_path / "with space"


@pytest.mark.parametrize("url", ["", "file://otherhost/x", "gs://bucket/x", "file://"])
def test_open_backend_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_backend(url)


def test_root_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a directory"):
        FilesystemBackend(tmp_path / "f")


def test_temp_files_are_invisible_and_cleaned(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path)
    backend.put("seg/a", b"1")
    stale = tmp_path / "seg" / f"{TEMP_PREFIX}deadbeef"
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    orphan_dir = tmp_path / "gone" / "deep"
    orphan_dir.mkdir(parents=True)
    (orphan_dir / f"{TEMP_PREFIX}0001").write_bytes(b"partial")
    os.utime(orphan_dir / f"{TEMP_PREFIX}0001", (time.time() - 7200,) * 2)
    fresh = tmp_path / "seg" / f"{TEMP_PREFIX}fresh"
    fresh.write_bytes(b"being written")
    assert [i.name for i in backend.list()] == ["seg/a"]
    assert backend.cleanup_temp(older_than=3600) == 2
    assert not stale.exists() and fresh.exists()
    assert not (tmp_path / "gone").exists()  # emptied directories go too
    assert backend.get("seg/a") == b"1"


def test_delete_removes_empty_directories_only(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path / "store")
    backend.put("a/b/c/one", b"1")
    backend.put("a/two", b"2")
    backend.delete("a/b/c/one")
    assert sorted(os.listdir(tmp_path / "store")) == ["a"]
    assert os.listdir(tmp_path / "store" / "a") == ["two"]
    backend.delete("a/two")
    assert os.listdir(tmp_path / "store") == []  # the root itself stays


def test_file_and_directory_name_clash_is_a_clear_error(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path)
    backend.put("a/b", b"1")
    with pytest.raises(StorageError, match="cannot hold both"):
        backend.put("a", b"2")
    backend.put("x", b"3")
    with pytest.raises(StorageError, match="cannot hold both"):
        backend.put("x/y/z", b"4")
    assert [i.name for i in backend.list()] == ["a/b", "x"]
    assert backend.get("x") == b"3"


def test_written_files_are_plain_files(tmp_path: Path) -> None:
    backend = FilesystemBackend(tmp_path)
    backend.put_stream("oplog/job/0001", [b"ab", b"cd"])
    assert (tmp_path / "oplog" / "job" / "0001").read_bytes() == b"abcd"
    assert [p.name for p in (tmp_path / "oplog" / "job").iterdir()] == ["0001"]
