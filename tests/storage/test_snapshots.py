# ruff: noqa: F811 - pytest fixtures imported from snapshot_helpers
"""Snapshots of a real head (filled by the Applier) into the blockstore: full,
incremental, synthetic full; restores after predecessors were expired and
groomed; consistency while the head keeps applying; corruption detection."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from backupflows.errors import Conflict, NotFound
from backupflows.head.store import HeadStore
from backupflows.storage import groom, integrity, service
from backupflows.storage import manifest as mf
from backupflows.storage import snapshot as snap
from backupflows.storage.blockstore import object_name
from tests.oplog.oplog_gen import generate
from tests.storage.snapshot_helpers import (  # noqa: F401 - fixtures
    assert_store_intact,
    catalog,
    fill,
    hashes,
    job,
    restored,
    small_opts,
    state_of,
    storage,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def oplog() -> list[bytes]:
    return generate(seed=5, n=6000)


def test_chain_of_snapshots_each_restores_alone_after_predecessors_are_groomed(
        oplog: list[bytes], storage: service.Storage, job: int, tmp_path: Path) -> None:
    """full -> incrementals -> synthetic full; every snapshot restores exactly
    the head at its optime, also once all its predecessors are expired and
    groomed (liveness = union of kept manifests)."""
    head = HeadStore(tmp_path / "h.db")
    expected: dict[int, dict[str, list[bytes]]] = {}
    cuts = [1500, 2500, 3200, 4000, 4800, 5400, len(oplog)]
    start = 0
    opts = small_opts(full_every=4, full_delta_percent=1000)
    for stop in cuts:
        fill(head, oplog[start:stop])
        start = stop
        sid = service.take(storage, job, head, opts=opts)
        expected[sid] = state_of(head)
    kinds = [service.open_snapshot(storage, s).kind for s in expected]
    assert kinds[0] == "full" and "incremental" in kinds and "synthetic" in kinds
    for sid, state in expected.items():
        got = restored(storage, sid)
        assert got == state  # raw bytes, _id order
        m = service.open_snapshot(storage, sid)
        assert {c.ns: (c.count, c.hash) for c in m.collections if c.holds_documents} \
            == hashes(state)
    # expire every snapshot but the last two, groom, restore the survivors
    ids = sorted(expected)
    with storage.sessions() as s:
        for sid in ids[:-2]:
            service.delete_snapshot(s, sid)
    result = groom.run(storage)
    assert result.blocks_deleted > 0 and result.manifests_deleted == len(ids) - 2
    for sid in ids[-2:]:
        assert restored(storage, sid) == expected[sid]
    with pytest.raises(NotFound):
        service.open_snapshot(storage, ids[0])
    assert groom.plan(storage).dead == []  # nothing more to reclaim
    assert_store_intact(storage)
    head.close()


def test_incremental_stores_only_the_changes(storage: service.Storage, job: int,
                                             tmp_path: Path) -> None:
    import bson

    from tests.oplog.helpers import Op, uuid

    op, ui = Op(), uuid(1)
    entries = [op.c("app", {"create": "big"}, ui=ui)]
    rng = __import__("random").Random(3)
    entries += [op.i("app.big", {"_id": i, "pad": rng.randbytes(100).hex(), "n": i}, ui=ui)
                for i in range(3000)]
    head = HeadStore(tmp_path / "h.db")
    fill(head, entries, batch=1000)
    first = service.take(storage, job, head, opts=small_opts())
    changes = [op.u("app.big", i, {"$v": 2, "diff": {"u": {"n": -i}}}, ui=ui)
               for i in range(1, 3000, 100)]
    changes += [op.d("app.big", 7, ui=ui)]
    fill(head, changes)
    second = service.take(storage, job, head, opts=small_opts())
    with storage.reading() as s:
        a, b = service.get_snapshot(s, first), service.get_snapshot(s, second)
        assert (a.kind, b.kind) == ("full", "incremental")
        # blocks + a manifest of the chain (with 4 KiB test blocks the manifest, which
        # lists every block with its SHA-256 id and content sum, is most of it)
        assert b.bytes_stored < a.bytes_stored * 0.06
    m = service.open_snapshot(storage, second)
    delta = m.collection("app", "big").layers[-1]
    assert (delta.kind, delta.docs, delta.tombstones) == ("delta", 30, 1)
    docs = [bson.decode(d) for d in service.read_collection(storage, second, "app", "big")]
    by_id = {d["_id"]: d["n"] for d in docs}
    assert len(docs) == 2999 and 7 not in by_id
    assert by_id[0] == 0 and by_id[101] == -101 and by_id[102] == 102
    # nothing changed: no new layer, almost nothing stored
    third = service.take(storage, job, head, opts=small_opts())
    m3 = service.open_snapshot(storage, third)
    assert [la.to_json() for la in m3.collection("app", "big").layers] == \
        [la.to_json() for la in m.collection("app", "big").layers]
    assert_store_intact(storage)
    head.close()


def test_snapshot_is_consistent_while_the_head_keeps_applying(
        oplog: list[bytes], storage: service.Storage, job: int, tmp_path: Path) -> None:
    """One read transaction: writes committed by the applier after the view
    opened (here: between opening it and reading every collection) are not
    in the snapshot, which equals a replay of the oplog up to its optime."""
    path = tmp_path / "h.db"
    writer = HeadStore(path)
    fill(writer, oplog[:2000])
    reader = HeadStore(path)
    begun = service.begin(storage, job)
    with reader.snapshot() as view:
        fill(writer, oplog[2000:4000])  # the applier keeps going meanwhile
        m, stats = snap.take(view, storage.blocks, snapshot_id=begun.snapshot_id,
                             job_id=job, opts=small_opts())
    service.finish(storage, m, stats)
    assert writer.optime().ts > m.optime_ts
    replica = HeadStore(tmp_path / "replica.db")
    fill(replica, oplog[:2000])
    assert replica.optime().ts == m.optime_ts
    assert restored(storage, m.snapshot) == state_of(replica)
    assert_store_intact(storage)
    for h in (writer, reader, replica):
        h.close()


def test_snapshot_taken_while_another_thread_applies(
        oplog: list[bytes], storage: service.Storage, job: int, tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with HeadStore(path) as h:
        fill(h, oplog[:2000])
    started, stop = threading.Event(), threading.Event()
    applied: list[int] = []

    def keep_applying() -> None:
        with HeadStore(path) as w:
            for i in range(2000, len(oplog), 25):
                fill(w, oplog[i:i + 25], batch=25)
                applied.append(i)
                started.set()
                if stop.is_set():
                    break

    t = threading.Thread(target=keep_applying)
    t.start()
    started.wait(10)
    try:
        with HeadStore(path) as reader:
            sid = service.take(storage, job, reader, opts=small_opts(), prune_tombstones=False)
    finally:
        stop.set()
        t.join()
    assert applied
    m = service.open_snapshot(storage, sid)
    from backupflows.bsonorder import find_field

    def ts(e: bytes) -> int:
        return int.from_bytes(e[find_field(e, b"ts")[1]:][:8], "little")

    with HeadStore(tmp_path / "replica.db") as replica:
        fill(replica, [e for e in oplog if ts(e) <= m.optime_ts])
        assert replica.optime().ts == m.optime_ts
        assert restored(storage, sid) == state_of(replica)
    assert_store_intact(storage)


def test_one_snapshot_at_a_time_per_job(storage: service.Storage, job: int) -> None:
    begun = service.begin(storage, job)
    with pytest.raises(Conflict, match="being taken"):
        service.begin(storage, job)
    service.fail(storage, begun.snapshot_id, "test")
    service.fail(storage, service.begin(storage, job).snapshot_id, "test")


def test_corrupt_or_missing_block_is_named_by_the_check(
        oplog: list[bytes], storage: service.Storage, job: int, tmp_path: Path) -> None:
    head = HeadStore(tmp_path / "h.db")
    fill(head, oplog[:3000])
    sid = service.take(storage, job, head, opts=small_opts())
    assert_store_intact(storage)
    m = service.open_snapshot(storage, sid)
    ids = m.block_ids()
    root = tmp_path / "store"
    victim = root / object_name(ids[len(ids) // 2])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    (root / object_name(ids[0])).unlink()
    result = integrity.check_storage(storage)
    assert not result.ok and set(result.failed) == {sid}
    text = "\n".join(result.problems)
    assert ids[len(ids) // 2] in text and ids[0] in text and f"snapshot {sid}" in text
    from sqlalchemy import select

    from backupflows.catalog.models import Event

    with storage.reading() as s:
        alerts = s.execute(select(Event).where(Event.kind == "alert")).scalars().all()
    assert len(alerts) == 1 and alerts[0].data["snapshot"] == sid
    # a corrupt manifest is found too
    (root / mf.object_name(job, sid)).write_bytes(b"BFO\x01garbage")
    assert "manifest" in "\n".join(integrity.check_storage(storage, alert=False).problems)
    head.close()
