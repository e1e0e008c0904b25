"""Restores verified from recorded block sums (manifest format 2): every full-layer
block records the content hash of its documents at snapshot time (checked there
against the head's hash), so a restore checks SHA-256 blocks and adds recorded
sums instead of hashing every document. Whatever is wrong is still caught: a
corrupted, missing or substituted block, a wrong recorded sum (restore failed,
nothing done, nothing left behind, non-zero exit); a head whose hash does not
match its documents fails the snapshot; format 1 manifests still restore
(per-document hashing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import bson
import pytest

from backupflows.catalog.restore_models import Restore
from backupflows.catalog.snapshot_models import Snapshot
from backupflows.contenthash import ContentHash
from backupflows.errors import IntegrityError, RestoreError
from backupflows.restore import service, verify
from backupflows.storage import container
from backupflows.storage import manifest as mf
from backupflows.storage.blockstore import object_name
from tests.restore.expect import assert_same, expected_view, read_dump_dir
from tests.restore.world import World, make_world

pytestmark = pytest.mark.timeout(120)
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(tmp_path: Path, data_dir: Path) -> World:
    w = make_world(tmp_path / "w")
    w.head.ensure_collection("shop", "orders")
    w.head.load_slice("shop", "orders", [bson.encode({"_id": i, "pad": "o" * (i % 200), "n": i})
                                         for i in range(3000)])
    w.head.ensure_collection("shop", "empty")
    w.snapshot()
    yield w
    w.head.close()


def _sid(w: World) -> int:
    return max(w.snapshots)


def _manifest(w: World) -> tuple[Snapshot, mf.Manifest]:
    with w.storage.reading() as s:
        row = service.snapshots.get_snapshot(s, _sid(w))
    return row, service.snapshots.load_manifest(w.storage, row)


def _rewrite(w: World, m: mf.Manifest, row: Snapshot, fmt: int | None = None) -> None:
    if fmt is None:
        w.storage.backend.put(row.manifest, mf.pack(m))
        return
    v = m.to_json()
    v["format"] = fmt
    w.storage.backend.put(row.manifest, container.pack(
        mf.KIND, {"snapshot": m.snapshot, "job": m.job, "format": fmt},
        json.dumps(v).encode()))


def _orders(m: mf.Manifest) -> mf.CollectionEntry:
    c = m.collection("shop", "orders")
    assert c is not None
    return c


def _restore(w: World, out: Path) -> dict:
    req = service.request(w.storage, deployment=w.name, snapshot_id=_sid(w),
                          destination={"kind": "dir", "path": str(out)})
    return service.run(w.storage, req.id, "test")


def _fails(w: World, out: Path, match: str, exc: type[Exception] = RestoreError) -> Restore:
    req = service.request(w.storage, deployment=w.name, snapshot_id=_sid(w),
                          destination={"kind": "dir", "path": str(out)})
    with pytest.raises(exc, match=match):
        service.run(w.storage, req.id, "test")
    with w.storage.reading() as s:
        row = s.get(Restore, req.id)
        assert row.state == "failed" and row.finished_at is not None and not row.result
    assert not out.exists()  # nothing partial left behind
    return row


def _no_document_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("a document was hashed")

    monkeypatch.setattr(verify, "hash_chunk", refuse)
    monkeypatch.setattr(verify.Checked, "_each_doc", refuse)


def test_snapshot_records_sums_that_add_up_and_restore_hashes_no_document(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    row, m = _manifest(world)
    c = _orders(m)
    blocks = c.block_sums()
    assert blocks is not None and len(blocks) > 50  # small test blocks
    assert sum(b.records for b in blocks) == c.count == 3000
    docs = list(world.head.export(world.head.require("shop", "orders")))
    assert ContentHash(c.count, sum(b.sum or 0 for b in blocks) % (1 << 256)) \
        == ContentHash.of(docs)
    assert json.loads(container.unpack(world.storage.backend.get(row.manifest))[1])[
        "format"] == 2
    _no_document_hashing(monkeypatch)
    out = _restore(world, tmp_path / "d")
    assert out["state"] == "done" and out["result"]["verified"] is True
    assert out["result"]["collections"]["shop.orders"]["hash"] == c.hash
    assert_same(read_dump_dir(tmp_path / "d"), expected_view(world.states[m.optime_ts]))


def test_a_wrong_recorded_sum_fails_the_restore(world: World, tmp_path: Path) -> None:
    row, m = _manifest(world)
    victim = _orders(m).layers[0].blocks[7]
    assert victim.sum is not None
    victim.sum = (victim.sum + 1) % (1 << 256)
    _rewrite(world, m, row)
    _fails(world, tmp_path / "d", "shop.orders: verification failed: delivered 3000 documents")


def test_a_corrupted_missing_or_substituted_block_fails_the_restore(world: World,
                                                                   tmp_path: Path) -> None:
    row, m = _manifest(world)
    blocks = _orders(m).layers[0].blocks
    first, second = blocks[3].id, blocks[4].id
    raw = world.storage.backend.get(object_name(first))
    world.storage.backend.put(object_name(first), raw[:-9] + bytes([raw[-9] ^ 0xFF])
                              + raw[-8:])
    err = _fails(world, tmp_path / "a", first[:12]).error or ""
    assert first in err
    world.storage.backend.put(object_name(first), raw)
    assert _restore(world, tmp_path / "ok")["state"] == "done"

    world.storage.backend.delete(object_name(second))
    _fails(world, tmp_path / "b", f"block {second} is missing from the store")

    # the manifest lists another (intact) block in place of one: its bytes are not
    # what the recorded sum was computed from
    world.storage.backend.put(object_name(second), raw)  # any content: never read below
    swapped = next(b for b in blocks if b.size != blocks[3].size)
    blocks[3] = mf.BlockEntry(swapped.id, blocks[3].size, blocks[3].records,
                              blocks[3].first_key, blocks[3].last_key, blocks[3].sum)
    _rewrite(world, m, row)
    _fails(world, tmp_path / "c", "shop.orders: block .* bytes, the manifest records")


def test_a_dropped_block_fails_the_restore(world: World, tmp_path: Path) -> None:
    row, m = _manifest(world)
    del _orders(m).layers[0].blocks[5]
    _rewrite(world, m, row)
    _fails(world, tmp_path / "d", "shop.orders: verification failed")


def test_a_format_1_manifest_restores_by_hashing_every_document(world: World,
                                                                tmp_path: Path) -> None:
    row, m = _manifest(world)
    for c in m.collections:
        for la in c.layers:
            for b in la.blocks:
                b.sum = None
    _rewrite(world, m, row, fmt=1)
    old = service.snapshots.load_manifest(world.storage, row)
    assert _orders(old).block_sums() is None
    out = _restore(world, tmp_path / "d")
    assert out["state"] == "done"
    assert_same(read_dump_dir(tmp_path / "d"), expected_view(world.states[m.optime_ts]))
    _orders(m).hash = "0" * 64  # and a format 1 mismatch is still caught, by hashing
    _rewrite(world, m, row, fmt=1)
    _fails(world, tmp_path / "e", "shop.orders: verification failed")
    _rewrite(world, m, row, fmt=3)
    _fails(world, tmp_path / "f", "unsupported manifest format 3", IntegrityError)


def test_a_malformed_recorded_sum_is_a_corrupt_manifest(world: World, tmp_path: Path) -> None:
    row, m = _manifest(world)
    v = m.to_json()
    v["collections"][[c["name"] for c in v["collections"]].index("orders")][
        "layers"][0]["blocks"][0][5] = "xyz"
    world.storage.backend.put(row.manifest, container.pack(
        mf.KIND, {"snapshot": m.snapshot, "job": m.job, "format": 2}, json.dumps(v).encode()))
    _fails(world, tmp_path / "d", "corrupt manifest: block .*: bad content sum", IntegrityError)


def test_a_head_hash_that_its_documents_do_not_match_fails_the_snapshot(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    from backupflows.head.export import HeadReader

    real = HeadReader.content_hash

    def off_by_one(self: HeadReader, c: Any) -> ContentHash:
        h = real(self, c)
        return ContentHash(h.count, (h.total + (c.name == "orders")) % (1 << 256))

    monkeypatch.setattr(HeadReader, "content_hash", off_by_one)
    with pytest.raises(IntegrityError, match="shop.orders: the snapshot's blocks hold 3000 "
                                             "documents .*, the head records 3000"):
        world.snapshot()
    with world.storage.reading() as s:
        states = [r.state for r in s.query(Snapshot).order_by(Snapshot.id)]
    assert states[0] == "done" and all(st != "done" for st in states[1:])


def test_cli_exits_non_zero_with_one_line(world: World, tmp_path: Path, data_dir: Path) -> None:
    row, m = _manifest(world)
    victim = _orders(m).layers[0].blocks[2]
    victim.sum = (victim.sum or 0) ^ 1
    _rewrite(world, m, row)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "BACKUPFLOWS_DATA_DIR": str(data_dir),
           "BACKUPFLOWS_CATALOG_URL": world.url,
           "BACKUPFLOWS_STORE_DIR": str(tmp_path / "w" / "store")}
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-c", "from backupflows.cli import main; main()",
                           "restore", world.name, "--snapshot", str(_sid(world)), "--to-dir",
                           str(out), "--local", "--wait"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode != 0
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert any("shop.orders: verification failed" in ln for ln in lines), done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


@pytest.fixture
def chain(tmp_path: Path, data_dir: Path) -> World:
    """A full snapshot then an incremental one (a delta layer over the full
    layer) and more oplog after it, all through the real Applier."""
    from backupflows.oplog.segments import entry_ts
    from tests.oplog.helpers import Op, uuid

    op, ui = Op(), uuid(9)
    w = make_world(tmp_path / "c")
    first = [op.c("shop", {"create": "orders"}, ui=ui)]
    first += [op.i("shop.orders", {"_id": i, "pad": "o" * (i % 200), "n": i}, ui=ui)
              for i in range(3000)]
    w.position = entry_ts(first[0]) - 1
    w.apply(first)
    w.snapshot()
    w.apply([op.u("shop.orders", 10, {"$v": 2, "diff": {"u": {"n": -10}}}, ui=ui),
             op.d("shop.orders", 1500, ui=ui),
             op.i("shop.orders", {"_id": 5000, "late": True}, ui=ui)])
    w.snapshot()
    w.apply([op.u("shop.orders", 2900, {"$v": 2, "diff": {"u": {"n": 0}}}, ui=ui),
             op.d("shop.orders", 11, ui=ui)], record_every=1)
    yield w
    w.head.close()


def _counting_runs(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    from backupflows.storage import layers as L

    seen = {"blocks": 0, "docs": 0}
    real = L.merge_runs

    def counted(*a: Any, **k: Any) -> Any:
        for data, entry in real(*a, **k):
            seen["docs" if entry is None else "blocks"] += 1
            yield data, entry

    monkeypatch.setattr(L, "merge_runs", counted)
    return seen


def test_an_incremental_chain_hashes_only_the_documents_of_touched_blocks(
        chain: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = max(chain.snapshots)
    m = service.snapshots.open_snapshot(chain.storage, sid)
    assert [la.kind for la in _orders(m).layers] == ["full", "delta"]
    seen = _counting_runs(monkeypatch)
    monkeypatch.setattr(verify, "hash_chunk", lambda *a: pytest.fail("a whole block hashed"))
    out = _restore(chain, tmp_path / "d")
    assert out["state"] == "done" and out["result"]["collections"]["shop.orders"]["count"] \
        == 3000
    assert_same(read_dump_dir(tmp_path / "d"), expected_view(chain.states[chain.snapshots[sid]]))
    from backupflows.bsonorder import id_key

    base = _orders(m).layers[0].blocks
    keys = [id_key(bson.encode({"_id": i})) for i in (10, 1500)]
    touched = [b for b in base if any(b.first_key <= k <= b.last_key for k in keys)]
    assert len(touched) == 2 and seen["blocks"] == len(base) - 2
    # the touched blocks' documents, less the deleted one, plus the one inserted
    assert seen["docs"] == sum(b.records for b in touched) - 1 + 1 < 3000 // 10


def test_a_point_in_time_hashes_only_what_the_oplog_touched(
        chain: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _counting_runs(monkeypatch)
    last = max(chain.states)
    req = service.request(chain.storage, deployment=chain.name,
                          at=f"{last >> 32}:{last & 0xFFFFFFFF}",
                          destination={"kind": "dir", "path": str(tmp_path / "p")})
    out = service.run(chain.storage, req.id, "t")
    assert out["state"] == "done" and out["result"]["roll_forward"]["entries"] == 2
    assert_same(read_dump_dir(tmp_path / "p"), expected_view(chain.states[last]))
    assert seen["blocks"] > 100 and 0 < seen["docs"] < 3000 // 5, seen


def test_a_wrong_sum_of_an_untouched_block_in_a_chain_fails(chain: World,
                                                            tmp_path: Path) -> None:
    sid = max(chain.snapshots)
    with chain.storage.reading() as s:
        row = service.snapshots.get_snapshot(s, sid)
    m = service.snapshots.load_manifest(chain.storage, row)
    victim = _orders(m).layers[0].blocks[-2]  # the changes are at keys 10, 1500, 5000
    victim.sum = (victim.sum or 0) ^ (1 << 200)
    chain.storage.backend.put(row.manifest, mf.pack(m))
    _fails(chain, tmp_path / "d", "shop.orders: verification failed: delivered 3000 documents")


def test_the_deep_storage_check_checks_every_recorded_sum(world: World) -> None:
    from backupflows.storage import integrity

    assert integrity.check_storage(world.storage, alert=False).ok
    row, m = _manifest(world)
    blocks = _orders(m).layers[0].blocks
    a, b = blocks[1], blocks[2]
    a.sum, b.sum = ((a.sum or 0) + 5) % (1 << 256), ((b.sum or 0) - 5) % (1 << 256)
    _rewrite(world, m, row)  # the total still adds up: only a per-block check sees it
    result = integrity.check_storage(world.storage, alert=False)
    assert not result.ok
    assert any(a.id in p and b.id in p and "the manifest records" in p for p in result.problems), \
        result.problems
