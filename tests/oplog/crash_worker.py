"""Subprocess of the crash test: resume applying an oplog file from the
head's own optime (``ts >= optime``, the duplicate is re-applied)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

from backupflows.bsonorder import find_field
from backupflows.head.store import HeadStore
from backupflows.oplog.applier import Applier
from tests.oplog.helpers import file_entries


def resume_from(path: str, ts: int) -> Iterator[bytes]:
    for raw in file_entries(path):
        found = find_field(raw, b"ts")
        assert found is not None
        if int.from_bytes(raw[found[1]:found[1] + 8], "little") >= ts:
            yield raw


def main(head_path: str, oplog_path: str, batch_size: int) -> None:
    with HeadStore(head_path) as head:
        start = head.optime().ts
        Applier(head).apply(resume_from(oplog_path, start), batch_size=batch_size)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
