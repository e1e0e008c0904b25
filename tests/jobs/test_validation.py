"""Validation finds what the slices missed.

While the slicer is held back (a fail point delays every read of the
backupflows agent), the test:

- updates documents of ``app.b_moved``, renames it to ``app.c_target`` and
  updates more of them: its range, read later, finds no collection, so every
  document of it is missing from the slices; the oplog's updates find no
  document (-> missing set) and the rename carries the empty collection over;
- updates then deletes one document of ``app.d_small`` before its range is
  read: the update finds no document, the delete that follows settles it
  (nothing to refetch, the document stays deleted).

Validation refetches the 20 missing ``_id``s of the moved collection and its
compare repairs the rest of it (280 documents only at the source). Both show
in the event history; the head then matches the source.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from backupflows.catalog.db import session_scope
from backupflows.catalog.models import SliceRange, SyncNamespace
from tests.jobs.conftest import Stack


def _sliced_docs(coll: str) -> int:
    with session_scope(readonly=True) as s:
        return int(s.scalar(select(func.coalesce(func.sum(SliceRange.docs), 0))
                            .join(SyncNamespace, SyncNamespace.id == SliceRange.namespace_id)
                            .where(SyncNamespace.coll == coll)) or 0)


def _fill(client: Any) -> None:
    client.app.a_big.insert_many([{"_id": i, "pad": "a" * 3000} for i in range(1500)])
    client.app.b_moved.insert_many([{"_id": i, "v": 0, "pad": "b" * 200} for i in range(300)])
    client.app.d_small.insert_many([{"_id": f"k{i}", "v": 0} for i in range(50)])


def test_documents_moved_during_slicing_are_refetched_by_validation(
        embedded_stack: Stack, source_client: Any) -> None:
    stack = embedded_stack
    server, client = source_client()
    _fill(client)
    stack.worker(concurrency=1)  # ranges are sliced one after the other, in namespace order
    stack.cli("deployments", "add", "src", "--uri", server.uri)
    server.faults.configure({"times": 60}, {"failCommands": ["find"], "blockConnection": True,
                                            "blockTimeMS": 150, "appName": "backupflows"})
    stack.cli("jobs", "start", "src")
    deadline = time.monotonic() + 60
    while stack.job("src")["t0"] is None:
        assert time.monotonic() < deadline, stack.job("src")
        time.sleep(0.01)
    for i in range(0, 10):
        client.app.b_moved.update_one({"_id": i}, {"$set": {"v": 1}})
    client.app.b_moved.rename("c_target")
    for i in range(10, 20):
        client.app.c_target.update_one({"_id": i}, {"$set": {"v": 2}})
    client.app.d_small.update_one({"_id": "k7"}, {"$set": {"v": 1}})
    client.app.d_small.delete_one({"_id": "k7"})
    assert stack.job("src")["state"] == "initial_sync"  # all of it during slicing
    row = stack.wait_state("src", "routine", timeout=120)
    server.faults.configure("off", {})

    missing = stack.events(row["job"], "validate.missing")[-1]["data"]
    assert missing["found"] == 20 and missing["gone"] == 0, missing  # k7: its delete settled it
    assert _sliced_docs("b_moved") == 0  # the whole collection was missed by the slices
    compared = stack.events(row["job"], "validate.compared")[-1]["data"]
    assert compared["only_in_source"] == 300 - 20, compared
    assert compared["by_ns"] == {"app.c_target": {"only_in_head": 0, "only_in_source": 280}}
    assert compared["repaired"] == 280

    stack.wait_caught_up("src", client)
    report = stack.check("src")
    assert report["ok"], report
    counts = {c["ns"]: c["head_count"] for c in report["collections"]}
    assert counts == {"app.a_big": 1500, "app.c_target": 300, "app.d_small": 49}
