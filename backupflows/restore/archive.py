"""Destination: a mongodump archive file (``--archive FILE [--gzip]``).

Written by ``ArchiveWriter`` (magic, header, prelude of every namespace,
document blocks, per-namespace EOF with CRC-64; one gzip member with
``gzip``) under ``FILE.partial``, renamed to ``FILE`` once every namespace
is written and verified. ``mongorestore --archive=FILE [--gzip]`` reads it.
An existing ``FILE`` is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

from backupflows.errors import RestoreError
from backupflows.mongodump import ArchiveWriter
from backupflows.mongodump.errors import DumpFormatError
from backupflows.restore.destination import Destination
from backupflows.restore.plan import Item
from backupflows.restore.verify import Checked

BUFFER = 1 << 20


class ArchiveDestination(Destination):
    kind = "archive"

    def __init__(self, path: str | os.PathLike[str], gzip: bool = False,
                 fsync: bool = False) -> None:
        self.path = Path(path).absolute()
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.gzip = gzip
        self.fsync = fsync
        self.file: BinaryIO | None = None
        self.writer: ArchiveWriter | None = None

    def prepare(self, items: list[Item]) -> None:
        if self.path.exists():
            raise RestoreError(f"archive {self.path} exists already; choose a new file name")
        if not self.path.parent.is_dir():
            raise RestoreError(f"directory {self.path.parent} does not exist")
        try:
            self.file = open(self.partial, "wb", buffering=BUFFER)  # noqa: SIM115
        except OSError as exc:
            raise RestoreError(f"cannot write {self.partial}: {exc.strerror or exc}") from None
        self.writer = ArchiveWriter(self.file, gzip=self.gzip,
                                    concurrent_collections=1)
        for item in items:
            self.writer.add_namespace(item.meta)

    def write(self, item: Item, stream: Checked) -> None:
        assert self.writer is not None
        try:
            if item.meta.has_data:
                self.writer.write_documents(item.meta, stream.docs())
            else:
                for _ in stream.docs():
                    raise RestoreError(f"{item.ns} is a view and has documents")
            self.writer.end_namespace(item.meta)
        except DumpFormatError as exc:
            raise RestoreError(f"{item.ns}: {exc}") from exc
        except OSError as exc:
            raise RestoreError(f"{item.ns}: writing {self.partial}: {exc.strerror or exc}") \
                from exc

    def finish(self) -> dict[str, Any]:
        assert self.writer is not None and self.file is not None
        self.writer.finish()
        self.file.flush()
        if self.fsync:
            os.fsync(self.file.fileno())
        self.file.close()
        if self.path.exists():
            raise RestoreError(f"archive {self.path} appeared while the restore ran")
        os.replace(self.partial, self.path)
        return {"kind": self.kind, "path": str(self.path), "gzip": self.gzip,
                "size": self.path.stat().st_size}

    def abort(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()
        self.partial.unlink(missing_ok=True)
