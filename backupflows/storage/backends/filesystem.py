"""Object store in a local directory (the default backend).

An object ``a/b/c`` is the file ``<root>/a/b/c``. Writes are atomic and
durable: the data goes to a temporary file in the same directory (named
``.bf-tmp-<random>``), which is fsynced, renamed over the final name, and the
directory is fsynced. A crash leaves at most a temporary file, which ``list``
and ``get`` never see and ``cleanup_temp`` removes.

Limitation of a filesystem: an object ``a`` and an object ``a/b`` cannot both
exist (``a`` would be both a file and a directory); such a put fails with a
clear ``StorageError``. backupflows' own layouts never do this.
"""

from __future__ import annotations

import os
import secrets
import stat as stat_mod
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from backupflows.errors import ConfigError, StorageError
from backupflows.storage.backends.base import (
    RESERVED_SEGMENT_PREFIX,
    Backend,
    CheckedChunks,
    ObjectInfo,
    ObjectNotFound,
)

TEMP_PREFIX = RESERVED_SEGMENT_PREFIX + "-"
_CREATE_ATTEMPTS = 5


class FilesystemBackend(Backend):
    """Named objects as files under ``root`` (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"object store root {str(self.root)!r} exists and is not a directory")
        self.url = self.root.as_uri()

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*name.split("/"))

    # ---- writes ---------------------------------------------------------------

    def _put_stream(self, name: str, chunks: CheckedChunks) -> None:
        path = self._path(name)
        with self._writing(name):
            fd, tmp = self._create_temp(path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    for chunk in chunks:
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with suppress(OSError):
                    os.unlink(tmp)
                raise
            _fsync_dir(path.parent)

    def _create_temp(self, parent: Path) -> tuple[int, Path]:
        """Open a new temporary file in ``parent``, creating directories.
        Retried because a concurrent ``delete`` may remove an empty parent."""
        for _ in range(_CREATE_ATTEMPTS):
            tmp = parent / f"{TEMP_PREFIX}{secrets.token_hex(8)}"
            try:
                self._makedirs(parent)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            except FileNotFoundError:
                continue
            return fd, tmp
        raise StorageError(f"cannot create a file in {str(parent)!r}: its directory keeps vanishing")

    def _makedirs(self, directory: Path) -> None:
        """Create ``directory`` and missing parents, fsyncing each parent so
        the new entries survive a crash."""
        missing: list[Path] = []
        d = directory
        while not d.is_dir():
            missing.append(d)
            if d == self.root or d.parent == d:
                break
            d = d.parent
        for d in reversed(missing):
            with suppress(FileExistsError):
                os.mkdir(d)
                _fsync_dir(d.parent)

    @contextmanager
    def _writing(self, name: str) -> Iterator[None]:
        try:
            yield
        except IsADirectoryError:
            raise StorageError(
                f"cannot write {name!r} in {self.url}: other objects are named {name + '/'!r}...; "
                "a filesystem object store cannot hold both") from None
        except (NotADirectoryError, FileExistsError):
            raise StorageError(
                f"cannot write {name!r} in {self.url}: a parent segment of the name is an "
                "existing object; a filesystem object store cannot hold both") from None
        except OSError as e:
            raise StorageError(f"cannot write {name!r} in {self.url}: {e.strerror or e}") from e

    def _delete(self, name: str) -> None:
        path = self._path(name)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except PermissionError as e:
            if path.is_dir():  # some systems report EPERM when unlinking a directory
                return
            raise StorageError(f"cannot delete {name!r} in {self.url}: {e.strerror}") from e
        except OSError as e:
            raise StorageError(f"cannot delete {name!r} in {self.url}: {e.strerror or e}") from e
        self._prune_empty_dirs(path.parent)

    def _prune_empty_dirs(self, directory: Path) -> None:
        """Remove empty directories from ``directory`` up to the root (best effort)."""
        d = directory
        while d != self.root and self.root in d.parents:
            try:
                os.rmdir(d)
            except OSError:
                return
            d = d.parent

    def cleanup_temp(self, older_than: float) -> int:
        """Remove temporary files of interrupted writes whose last change is
        more than ``older_than`` seconds ago; return how many were removed.
        Use an age well above the longest write, so live writes are spared."""
        deadline = time.time() - older_than
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for fname in files:
                if not fname.startswith(TEMP_PREFIX):
                    continue
                path = Path(dirpath, fname)
                with suppress(FileNotFoundError):
                    if path.lstat().st_mtime < deadline:
                        path.unlink()
                        removed += 1
                        self._prune_empty_dirs(path.parent)
        return removed

    # ---- reads ----------------------------------------------------------------

    @contextmanager
    def _reading(self, name: str) -> Iterator[None]:
        try:
            yield
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(name, self.url) from None
        except OSError as e:
            raise StorageError(f"cannot read {name!r} in {self.url}: {e.strerror or e}") from e

    def _get(self, name: str) -> bytes:
        with self._reading(name), open(self._path(name), "rb") as f:
            return f.read()

    def _get_range(self, name: str, offset: int, length: int) -> bytes:
        with self._reading(name), open(self._path(name), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def _open_read(self, name: str) -> BinaryIO:
        with self._reading(name):
            return open(self._path(name), "rb")  # noqa: SIM115 (the caller closes it)

    def _stat(self, name: str) -> ObjectInfo:
        with self._reading(name):
            st = os.stat(self._path(name))
        if not stat_mod.S_ISREG(st.st_mode):
            raise ObjectNotFound(name, self.url)
        return ObjectInfo(name, st.st_size, st.st_mtime)

    def _list(self, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
        dir_part, _, leaf = prefix.rpartition("/")
        base = self._path(dir_part) if dir_part else self.root
        yield from self._walk(base, dir_part + "/" if dir_part else "", leaf, start_after)

    def _walk(self, directory: Path | str, rel: str, leaf: str,
              start_after: str | None) -> Iterator[ObjectInfo]:
        """Depth-first walk in global name order: a directory ``d`` sorts as
        ``"d/"`` among its siblings, so ``a.b`` comes before ``a/x``."""
        for key, entry, is_dir in _sorted_entries(directory, leaf):
            full = rel + key
            if is_dir:
                if start_after is not None and start_after > full and not start_after.startswith(full):
                    continue  # the whole subtree sorts before start_after
                yield from self._walk(entry.path, full, "", start_after)
            elif start_after is None or full > start_after:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while listing
                yield ObjectInfo(full, st.st_size, st.st_mtime)


def _sorted_entries(directory: Path | str, leaf: str) -> list[tuple[str, os.DirEntry[str], bool]]:
    """The directory's objects and subdirectories whose name starts with
    ``leaf``, sorted by their key (a directory's key ends with '/')."""
    items: list[tuple[str, os.DirEntry[str], bool]] = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith(TEMP_PREFIX) or not entry.name.startswith(leaf):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        items.append((entry.name + "/", entry, True))
                    elif entry.is_file(follow_symlinks=False):
                        items.append((entry.name, entry, False))
                except FileNotFoundError:
                    continue
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise StorageError(f"cannot list {str(directory)!r}: {e.strerror or e}") from e
    items.sort(key=lambda item: item[0])
    return items


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
