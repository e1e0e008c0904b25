"""Destination: a directory in the mongodump layout (``--to-dir DIR``).

``<db>/<coll>.bson`` + ``<coll>.metadata.json`` (``.gz`` with ``gzip``),
written by ``DumpWriter`` (each file under a temporary name, renamed when
complete), readable by ``mongorestore --dir`` and ``DumpReader``. The
directory must not exist or be empty; a failed restore removes what it wrote.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from backupflows.errors import RestoreError
from backupflows.mongodump import DumpWriter
from backupflows.mongodump.errors import DumpFormatError
from backupflows.mongodump.fileio import atomic_write
from backupflows.restore.destination import Destination
from backupflows.restore.plan import Item
from backupflows.restore.verify import Checked

MARKER = ".backupflows-restore"


def check_empty_dir(path: Path, owner: str = "", what: str = "restore directory") -> bool:
    """True if ``path`` must be created; ``RestoreError`` if it holds anything
    but the partial output of the same restore (its marker file names ``owner``)."""
    if not path.exists():
        return True
    if not path.is_dir():
        raise RestoreError(f"{what} {path} exists and is not a directory")
    if owner and (path / MARKER).is_file() and (path / MARKER).read_text() == owner:
        _empty(path)  # a previous attempt of this restore (its worker was lost)
        return False
    if any(path.iterdir()):
        raise RestoreError(f"{what} {path} is not empty; choose a new or empty directory")
    return False


def _empty(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


class DirDestination(Destination):
    kind = "dir"

    def __init__(self, path: str | os.PathLike[str], gzip: bool = False,
                 fsync: bool = False, owner: str = "") -> None:
        self.path = Path(path).absolute()
        self.owner = owner
        self.gzip = gzip
        self.fsync = fsync
        self._created = False
        self.writer: DumpWriter | None = None
        self.files = 0

    def prepare(self, items: list[Item]) -> None:
        self._created = check_empty_dir(self.path, self.owner)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if self.owner:
                (self.path / MARKER).write_text(self.owner)
        except OSError as exc:
            raise RestoreError(f"cannot create {self.path}: {exc.strerror or exc}") from None
        self.writer = DumpWriter(self.path, gzip=self.gzip, fsync=self.fsync)

    def write(self, item: Item, stream: Checked) -> None:
        """The ``.bson`` file from whole-document chunks (framing checked by the
        stream), then the metadata file, each written atomically as
        ``DumpWriter`` does."""
        w = self.writer
        assert w is not None
        try:
            w.db_dir(item.meta.db)
            if item.meta.has_data:
                with atomic_write(w.bson_path(item.meta), self.gzip, self.fsync) as out:
                    for chunk in stream.chunks():
                        out.write(chunk)
            else:
                for _ in stream.docs():
                    raise RestoreError(f"{item.ns} is a view and has documents")
            with atomic_write(w.metadata_path(item.meta), self.gzip, self.fsync) as out:
                out.write(item.meta.to_json().encode("utf-8"))
        except DumpFormatError as exc:
            raise RestoreError(f"{item.ns}: {exc}") from exc
        except OSError as exc:
            raise RestoreError(f"{item.ns}: writing {self.path}: {exc.strerror or exc}") from exc
        self.files += 2 if item.meta.has_data else 1

    def finish(self) -> dict[str, Any]:
        (self.path / MARKER).unlink(missing_ok=True)
        return {"kind": self.kind, "path": str(self.path), "gzip": self.gzip,
                "files": self.files}

    def abort(self) -> None:
        if self._created:
            shutil.rmtree(self.path, ignore_errors=True)
        elif self.path.is_dir():
            _empty(self.path)
