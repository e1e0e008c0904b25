"""Child process of the crash tests: takes a snapshot or runs a groom and
kills itself with SIGKILL at the N-th storage event (object put/delete or
catalog transaction), like a kill -9 at that point.

Usage: python -m tests.storage.crash_worker snapshot|groom CATALOG STORE HEAD JOB N
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from backupflows.head.store import HeadStore
from backupflows.storage import groom, service
from backupflows.storage.backends import open_backend
from tests.storage.snapshot_helpers import small_opts

_count = [0]


def _event(limit: int) -> None:
    _count[0] += 1
    if _count[0] == limit:
        os.kill(os.getpid(), signal.SIGKILL)


class _Counting(service.Storage):
    limit = 0

    def sessions(self):  # type: ignore[no-untyped-def]
        _event(self.limit)
        return super().sessions()


def main() -> None:
    mode, url, store, head, job, limit = sys.argv[1:7]
    backend = open_backend(store)
    for method in ("put", "delete"):
        original = getattr(backend, method)

        def wrapped(*a, _o=original, **kw):  # type: ignore[no-untyped-def]
            _event(int(limit))
            result = _o(*a, **kw)
            _event(int(limit))
            return result
        setattr(backend, method, wrapped)
    _Counting.limit = int(limit)
    storage = _Counting(url, backend)
    service.LEASE_SECONDS = 1.0
    if mode == "snapshot":
        with HeadStore(Path(head)) as h:
            service.take(storage, int(job), h, opts=small_opts())
    else:
        groom.run(storage, lease_seconds=1.0, orphan_grace=0.0)
    print("finished", _count[0])


if __name__ == "__main__":
    main()
