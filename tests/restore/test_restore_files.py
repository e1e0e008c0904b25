"""Restores into files from a real history (head + Applier + snapshots +
stored oplog): a directory, an archive (read back by an independent spec
reader, gzip too), a .tar.gz; snapshots and points in time; selection and
renaming; verification failures leave nothing marked done."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from backupflows.catalog.restore_models import Restore
from backupflows.errors import RestoreError
from backupflows.restore import service
from backupflows.storage import manifest as mf
from backupflows.storage.blockstore import object_name
from tests.restore.archive_spec import read_archive
from tests.restore.expect import archive_view, assert_same, expected_view, read_dump_dir
from tests.restore.world import World

pytestmark = pytest.mark.timeout(180)
MAX = 0xFFFFFFFF


def _at(ts: int) -> str:
    return f"{ts >> 32}:{ts & MAX}"


def _restore(w: World, dest: dict, **kw: object) -> dict:
    req = service.request(w.storage, deployment=w.name, destination=dest, **kw)  # type: ignore[arg-type]
    return service.run(w.storage, req.id, "test")


def test_each_snapshot_restores_to_a_directory_exactly(history: World, tmp_path: Path) -> None:
    for sid, ts in history.snapshots.items():
        out = _restore(history, {"kind": "dir", "path": str(tmp_path / f"s{sid}")},
                       snapshot_id=sid)
        assert out["state"] == "done" and out["result"]["verified"] is True
        assert_same(read_dump_dir(tmp_path / f"s{sid}"), expected_view(history.states[ts]))
        assert out["progress"]["collections_done"] == out["progress"]["collections_total"] > 0
        assert out["progress"]["docs"] == sum(len(v.docs) for v in history.states[ts].values())


def test_point_in_time_restores_to_every_recorded_optime(history: World,
                                                         tmp_path: Path) -> None:
    points = sorted(history.states)
    assert len(points) >= 10
    for n, ts in enumerate(points):
        dest = tmp_path / f"p{n}"
        out = _restore(history, {"kind": "dir", "path": str(dest), "gzip": n % 2 == 1},
                       at=_at(ts))
        assert out["state"] == "done", out["error"]
        assert_same(read_dump_dir(dest), expected_view(history.states[ts]))
        snap_ts = max(t for t in history.snapshots.values() if t <= ts)
        rf = out["result"].get("roll_forward")
        assert (rf is None) == (snap_ts == ts)
        if rf is not None:
            assert rf["entries"] > 0


@pytest.mark.parametrize("gzip", [False, True])
def test_archives_read_back_by_an_independent_reader(history: World, tmp_path: Path,
                                                     gzip: bool) -> None:
    points = sorted(history.states)
    for ts in (points[3], points[-1]):
        path = tmp_path / f"a-{ts}.archive"
        out = _restore(history, {"kind": "archive", "path": str(path), "gzip": gzip},
                       at=_at(ts))
        assert out["state"] == "done", out["error"]
        data = path.read_bytes()
        assert (data[:2] == b"\x1f\x8b") == gzip
        archive = read_archive(data)
        assert archive.header["version"] == "0.1"
        assert_same(archive_view(archive), expected_view(history.states[ts]))
        assert not path.with_name(path.name + ".partial").exists()


def test_selection_and_renaming(history: World, tmp_path: Path) -> None:
    ts = sorted(history.states)[5]
    state = history.states[ts]
    shop = {ns for ns in state if ns.startswith("shop.")}
    assert shop and any(not ns.startswith("shop.") for ns in state)
    dest = tmp_path / "sel"
    out = _restore(history, {"kind": "dir", "path": str(dest)}, at=_at(ts),
                   selection={"include": ["shop"], "exclude": [f"{sorted(shop)[0]}"],
                              "ns_from": ["shop.*"], "ns_to": ["restored_shop.*"]})
    assert out["state"] == "done", out["error"]
    kept = {ns: st for ns, st in state.items() if ns in shop and ns != sorted(shop)[0]}
    renames = {ns: "restored_shop." + ns.split(".", 1)[1] for ns in kept}
    assert_same(read_dump_dir(dest), expected_view(kept, renames))


def test_download_tar_gz_holds_the_dump_directory(history: World, tmp_path: Path) -> None:
    sid, ts = next(iter(history.snapshots.items()))
    out = _restore(history, {"kind": "download"}, snapshot_id=sid)
    assert out["state"] == "done", out["error"]
    link = out["download"]
    path = Path(history_downloads()) / link["file"]
    with tarfile.open(path, "r:gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    assert_same(read_dump_dir(tmp_path / "x" / "dump"), expected_view(history.states[ts]))
    assert link["uses_left"] == 1 and link["url"].startswith("/downloads/")


def history_downloads() -> Path:
    from backupflows.restore.download import downloads_dir

    return downloads_dir()


def _state(w: World, restore_id: int) -> Restore:
    with w.storage.reading() as s:
        return s.get(Restore, restore_id)


def test_a_corrupted_block_fails_the_restore_and_nothing_is_done(history: World,
                                                                 tmp_path: Path) -> None:
    sid = max(history.snapshots)
    m = service.snapshots.open_snapshot(history.storage, sid)
    victim = next(c for c in m.collections if c.holds_documents and c.count).block_ids()[0]
    raw = history.storage.backend.get(object_name(victim))
    history.storage.backend.put(object_name(victim), raw[:-9] + bytes([raw[-9] ^ 0xFF])
                                + raw[-8:])
    for dest in ({"kind": "dir", "path": str(tmp_path / "d")},
                 {"kind": "archive", "path": str(tmp_path / "a.archive")}):
        req = service.request(history.storage, deployment=history.name, destination=dest,
                              snapshot_id=sid)
        with pytest.raises(RestoreError, match=victim[:12]):
            service.run(history.storage, req.id, "test")
        row = _state(history, req.id)
        assert row.state == "failed" and victim in (row.error or "")
        assert row.finished_at is not None and not row.result
    assert not (tmp_path / "d").exists()
    assert not list(tmp_path.glob("a.archive*"))


def test_a_manifest_whose_hash_does_not_match_fails_verification(history: World,
                                                                 tmp_path: Path) -> None:
    sid = max(history.snapshots)
    with history.storage.reading() as s:
        row = service.snapshots.get_snapshot(s, sid)
    m = service.snapshots.load_manifest(history.storage, row)
    c = next(c for c in m.collections if c.holds_documents and c.count)
    c.hash = "0" * 64
    history.storage.backend.put(row.manifest, mf.pack(m))
    req = service.request(history.storage, deployment=history.name,
                          destination={"kind": "dir", "path": str(tmp_path / "v")},
                          snapshot_id=sid)
    with pytest.raises(RestoreError, match=f"{c.ns}: verification failed"):
        service.run(history.storage, req.id, "test")
    assert _state(history, req.id).state == "failed"
    assert not (tmp_path / "v").exists()


def test_refusals_before_anything_is_written(history: World, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    out_archive = tmp_path / "exists.archive"
    out_archive.write_bytes(b"x")
    for dest in ({"kind": "dir", "path": str(busy)},
                 {"kind": "archive", "path": str(out_archive)}):
        req = service.request(history.storage, deployment=history.name, destination=dest,
                              snapshot_id=1)
        with pytest.raises(RestoreError, match="not empty|exists already"):
            service.run(history.storage, req.id, "test")
    assert (busy / "keep.txt").read_text() == "mine" and len(list(busy.iterdir())) == 1
    assert out_archive.read_bytes() == b"x"
    bad = [({"kind": "tape"}, "destination kind"), ({"kind": "dir"}, "needs a 'path'"),
           ({"kind": "uri", "uri": "http://x"}, "mongodb://"),
           ({"kind": "dir", "path": "/x", "zip": 1}, "unknown dir destination key")]
    for dest, msg in bad:
        with pytest.raises(RestoreError, match=msg):
            service.request(history.storage, deployment=history.name, destination=dest,
                            snapshot_id=1)
    with pytest.raises(RestoreError, match="exactly one"):
        service.request(history.storage, deployment=history.name,
                        destination={"kind": "download"})


def test_a_filesystem_store_snapshot_restores_by_id(history: World, tmp_path: Path) -> None:
    from backupflows.storage import operations

    sid = operations.take_fs(history.storage, history.job_id, history.head, history.name,
                             generation=1)
    state = expected_view(history.states[max(history.states)])
    out = _restore(history, {"kind": "archive", "path": str(tmp_path / "fs.archive")},
                   snapshot_id=sid, selection={"ns_from": ["app.*"], "ns_to": ["app2.*"]})
    assert out["state"] == "done", out["error"]
    assert out["result"]["source"]["store"] == "filesystem"
    renames = {ns: "app2." + ns.split(".", 1)[1] for ns in state if ns.startswith("app.")}
    assert_same(archive_view(read_archive((tmp_path / "fs.archive").read_bytes())),
                expected_view(history.states[max(history.states)], renames))
