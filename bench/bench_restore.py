"""Benchmark: restores, next to restic and borg, same data, one run.

Run:  .venv/bin/python bench/bench_restore.py [--docs N] [--target-docs N]
          [--oplog N] [--repeat N] [--dir-only] [--workdir DIR] [--keep]

1. Data set-up of ``bench_snapshot.py`` (imported, not copied): a head of
   ``--docs`` generated documents (~330 bytes each; default 1.6 M, ~530 MB of
   BSON) plus a ``bench.orders`` collection of ``--target-docs`` documents,
   exported as a mongodump directory; ``restic backup`` (restic 0.14),
   ``borg create -C zstd,3`` (borg 1.2) of that directory and our full
   snapshot of the head.
2. Restore to a directory: ``restic restore latest --target``, ``borg
   extract``, and ``backupflows`` (snapshot -> mongodump directory, block
   hashes, per-collection counts and content hashes verified), each into an
   empty directory after a ``sync``, interleaved ``--repeat`` times; median
   wall time; our peak RSS. ``ours`` verifies each collection from the
   SHA-256-checked blocks and the content sums the manifest records per block
   (format 2); ``ours_perdoc`` is the same restore with those sums ignored,
   i.e. every document hashed as for a format 1 manifest (the method before
   the sums; interleaved in the same run for a fair comparison). Diagnostic:
   the same blocks read, SHA-256 checked, decompressed and written WITHOUT
   any content-hash accounting (not a restore: the floor).
3. Point in time: ``--oplog`` update/insert/delete entries stored as oplog
   segments after the snapshot; a restore at the last one (snapshot loaded
   into a temporary head, entries applied, result written and verified):
   roll-forward rate (entries/s), total wall time, peak RSS.
4. Into a target: ``bench.orders`` restored into a sandbox (a separate
   ``backupflows sandbox`` process), documents/s, next to a plain pymongo
   ``insert_many`` (batches of 1000, ordered=False, raw BSON) of the same
   documents into a fresh sandbox.

Our restores run in child processes that report wall time and peak RSS
(``ru_maxrss``). Targets (issue 6): directory restore wall time <= restic's;
peak RSS < 300 MB. Writes a JSON report to bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bson
from bson.int64 import Int64
from bson.son import SON
from bson.timestamp import Timestamp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_snapshot as snapbench  # noqa: E402

from backupflows.head.store import HeadStore  # noqa: E402

ORDERS = "orders"
ORDERS_UI = bson.Binary(b"\x06" * 16, 4)
OPLOG_TS = 1_800_000_000
SEGMENT = 5000


# -- data -----------------------------------------------------------------------------------

def add_orders(head: HeadStore, n: int) -> None:
    head.ensure_collection(snapbench.DB, ORDERS, uuid=bytes(ORDERS_UI))
    rng = random.Random(17)
    batch = []
    for i in range(n):
        batch.append(snapbench.make_document(rng, 10_000_000 + i))
        if len(batch) >= 50_000:
            head.load_slice(snapbench.DB, ORDERS, batch)
            batch = []
    if batch:
        head.load_slice(snapbench.DB, ORDERS, batch)


def oplog_entries(ids: list[Any], n: int) -> list[bytes]:
    """``n`` entries: 70% $v:2 updates of existing documents, 20% inserts, 10% deletes."""
    rng = random.Random(5)
    ns = f"{snapbench.DB}.{snapbench.COLL}"
    out, live = [], list(ids)
    for inc in range(1, n + 1):
        r = rng.random()
        head = SON([("op", "u"), ("ns", ns), ("ui", snapbench.UI)])
        if r < 0.7 and live:
            _id = rng.choice(live)
            diff = SON([("u", SON([("balance", round(rng.uniform(0, 1e5), 2)),
                                   ("visits", Int64(rng.randrange(1 << 30)))]))])
            head.update(o=SON([("$v", 2), ("diff", diff)]), o2=SON([("_id", _id)]))
        elif r < 0.9 or not live:
            doc = bson.decode(snapbench.make_document(rng, 20_000_000 + inc))
            head.update(op="i", o=doc, o2=SON([("_id", doc["_id"])]))
            live.append(doc["_id"])
        else:
            _id = live.pop(rng.randrange(len(live)))
            head.update(op="d", o=SON([("_id", _id)]))
        head.update(ts=Timestamp(OPLOG_TS, inc), t=Int64(1), v=2,
                    wall=datetime.datetime(2027, 1, 15))
        out.append(bson.encode(head))
    return out


def store_oplog(work: Path, entries: list[bytes], after: int) -> int:
    """Store entries as chained segments of job 1 (generation 0, the snapshot's)."""
    from backupflows.catalog.db import session_scope
    from backupflows.catalog.models import OplogSegment
    from backupflows.oplog.segments import encode_segment, entry_ts, ts_of
    from backupflows.storage.backends import open_backend

    backend = open_backend(work / "store")
    url = f"sqlite:///{work}/catalog.db"
    for start in range(0, len(entries), SEGMENT):
        part = entries[start:start + SEGMENT]
        last = entry_ts(part[-1])
        name = f"oplog/job-1/g0/{after:016x}-{last:016x}"
        backend.put(name, encode_segment(part, after_ts=ts_of(after)))
        with session_scope(url) as s:
            s.add(OplogSegment(job_id=1, generation=0, after_ts=after, last_ts=last,
                               count=len(part), nbytes=sum(map(len, part)), object_name=name))
        after = last
    return after


def widen_pit_window(work: Path) -> None:
    from sqlalchemy import update

    from backupflows.catalog.db import session_scope
    from backupflows.catalog.snapshot_models import SnapshotPolicy
    from backupflows.storage import service

    with session_scope(f"sqlite:///{work}/catalog.db") as s:
        service.policy_for(s, 1)
        s.execute(update(SnapshotPolicy).values(pit_window_hours=24 * 365 * 30))


# -- our restores, in child processes ----------------------------------------------------------

def child(work: Path, what: str, arg: str) -> None:
    """Child: one restore of deployment 'bench'; prints a JSON report."""
    os.environ["BACKUPFLOWS_DATA_DIR"] = str(work / "data")
    from backupflows.restore import service
    from backupflows.storage.service import Storage

    storage = Storage.open(f"sqlite:///{work}/catalog.db", work / "store")
    if what == "blocks":
        blocks_only(storage, Path(arg))
        return
    if what == "dir-perdoc":  # as for a format 1 manifest: no recorded block sums
        from backupflows.storage.manifest import CollectionEntry

        CollectionEntry.block_sums = lambda self: None  # type: ignore[method-assign]
        what = "dir"
    kw: dict[str, Any] = {"snapshot_id": 1}
    if what == "dir":
        dest: dict[str, Any] = {"kind": "dir", "path": arg}
    elif what == "pit":
        dest = {"kind": "dir", "path": arg.split("@")[0]}
        kw = {"at": arg.split("@")[1]}
    else:
        dest = {"kind": "uri", "uri": arg}
        kw["selection"] = {"include": [f"{snapbench.DB}.{ORDERS}"]}
    start = time.perf_counter()
    req = service.request(storage, deployment="bench", destination=dest, **kw)
    out = service.run(storage, req.id, "bench")
    wall = time.perf_counter() - start
    print(json.dumps({"wall": wall, "state": out["state"], "result": out["result"],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def blocks_only(storage: Any, out: Path) -> None:
    """Diagnostic, not a restore: the blocks of snapshot 1 read (SHA-256
    checked, decompressed) and written as .bson files, with NO per-document
    content hash: what the directory restore costs without that verification."""
    from backupflows.storage import service

    start = time.perf_counter()
    m = service.open_snapshot(storage, 1)
    out.mkdir(parents=True)
    for c in m.collections:
        with open(out / f"{c.db}.{c.name}.bson", "wb", buffering=1 << 20) as f:
            for data in storage.blocks.iter_blocks([b.id for b in c.layers[0].blocks], 4):
                f.write(data)
    print(json.dumps({"wall": time.perf_counter() - start, "state": "done", "result": {},
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(work: Path, what: str, arg: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", what, "--arg", arg,
                           "--workdir", str(work)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child {what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- reference tools and the sandbox ---------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sandbox:
    """A ``backupflows sandbox`` process on a free port."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from backupflows.cli import main; main()", "sandbox",
             "--port", str(self.port)], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=dict(os.environ, BACKUPFLOWS_DATA_DIR=str(work)))
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("sandbox did not start") from None
                time.sleep(0.1)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?replicaSet=rs0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def plain_insert(uri: str, docs: list[bytes]) -> float:
    import pymongo
    from bson.raw_bson import RawBSONDocument

    with pymongo.MongoClient(uri) as client:
        coll = client["plain"]["orders"]
        start = time.perf_counter()
        for i in range(0, len(docs), 1000):
            coll.insert_many([RawBSONDocument(d) for d in docs[i:i + 1000]], ordered=False)
        return time.perf_counter() - start


def count_docs(uri: str, db: str, coll: str) -> int:
    import pymongo

    with pymongo.MongoClient(uri) as client:
        return int(client[db][coll].estimated_document_count())


# -- the run ---------------------------------------------------------------------------------

def prepare(work: Path, args: argparse.Namespace, report: dict[str, Any]) -> list[Any]:
    t = time.perf_counter()
    head, ids = snapbench.build_head(work / "head.db", args.docs)
    add_orders(head, args.target_docs)
    report["head_build_s"] = time.perf_counter() - t
    report["head_bytes"] = sum(len(d) for c in head.collections() for d in head.export(c))
    snapbench.export_dump(head, work / "dump")
    head.close()
    report["dump_bytes"] = snapbench.du(work / "dump")
    snapbench.init_catalog(work)
    widen_pit_window(work)
    snap = snapbench.take_in_child(work)
    report["snapshot"] = {"wall": snap["wall"], "bytes_stored": snap["bytes_stored"]}
    return ids


def restore_dirs(work: Path, env: dict[str, str], report: dict[str, Any],
                 repeat: int = 3) -> None:
    restic, borg, dump = work / "restic", work / "borg", work / "dump"
    subprocess.run(["restic", "init", "--repo", str(restic)], env=env, check=True,
                   capture_output=True)
    subprocess.run(["borg", "init", "-e", "none", str(borg)], env=env, check=True,
                   capture_output=True)
    backups = {  # the snapshot costs more since it sums documents: shown next to these
        "restic_backup_s": snapbench.timed_cmd(
            ["restic", "backup", "--repo", str(restic), "--compression", "auto", "--quiet",
             str(dump)], env),
        "borg_create_s": snapbench.timed_cmd(
            ["borg", "create", "-C", "zstd,3", f"{borg}::first", str(dump)], env)}
    runs: dict[str, list[float]] = {"restic": [], "borg": [], "ours": [], "ours_perdoc": [],
                                    "blocks_only": []}
    out: dict[str, Any] = dict(backups)
    for _ in range(repeat):  # interleaved, each into an empty directory after a sync
        for d in ("r-restic", "r-borg", "r-ours"):
            shutil.rmtree(work / d, ignore_errors=True)
        os.sync()
        runs["restic"].append(snapbench.timed_cmd(
            ["restic", "restore", "latest", "--repo", str(restic), "--target",
             str(work / "r-restic")], env))
        os.sync()
        target = work / "r-borg"
        target.mkdir()
        start = time.perf_counter()
        subprocess.run(["borg", "extract", f"{borg}::first"], env=env, check=True, cwd=target,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        runs["borg"].append(time.perf_counter() - start)
        os.sync()
        ours = run_child(work, "dir", str(work / "r-ours"))
        assert ours["state"] == "done", ours
        runs["ours"].append(ours["wall"])
        shutil.rmtree(work / "r-perdoc", ignore_errors=True)
        os.sync()
        perdoc = run_child(work, "dir-perdoc", str(work / "r-perdoc"))
        assert perdoc["state"] == "done", perdoc
        runs["ours_perdoc"].append(perdoc["wall"])
        shutil.rmtree(work / "r-blocks", ignore_errors=True)
        os.sync()
        runs["blocks_only"].append(run_child(work, "blocks", str(work / "r-blocks"))["wall"])
    for tool, times in runs.items():
        out[f"{tool}_runs"] = [round(t, 3) for t in times]
        out[f"{tool}_s"] = sorted(times)[len(times) // 2]  # median
    out["restic_bytes"] = snapbench.du(work / "r-restic")
    out["borg_bytes"] = snapbench.du(work / "r-borg")
    out.update(ours_bytes=snapbench.du(work / "r-ours"), ours_rss_mb=ours["rss_mb"],
               ours_docs=ours["result"]["docs"], ours_verified=ours["result"]["verified"])
    report["dir"] = out
    for d in ("r-restic", "r-borg", "r-ours", "r-perdoc", "r-blocks"):
        shutil.rmtree(work / d, ignore_errors=True)


def restore_pit(work: Path, ids: list[Any], n: int, report: dict[str, Any]) -> None:
    from backupflows.storage import service
    from backupflows.storage.service import Storage

    storage = Storage.open(f"sqlite:///{work}/catalog.db", work / "store")
    with storage.reading() as s:
        snap_ts = int(service.get_snapshot(s, 1).optime_ts or 0)
    entries = oplog_entries(ids, n)
    last = store_oplog(work, entries, snap_ts)
    at = f"{last >> 32}:{last & 0xFFFFFFFF}"
    ours = run_child(work, "pit", f"{work / 'r-pit'}@{at}")
    assert ours["state"] == "done", ours
    rf = ours["result"]["roll_forward"]
    report["pit"] = {"entries": rf["entries"], "entries_per_s": rf["entries_per_second"],
                     "load_s": rf["seconds_load"], "apply_s": rf["seconds_apply"],
                     "wall_s": ours["wall"], "rss_mb": ours["rss_mb"]}
    shutil.rmtree(work / "r-pit", ignore_errors=True)


def restore_target(work: Path, n: int, report: dict[str, Any]) -> None:
    sandbox = Sandbox(work / "sb1")
    try:
        ours = run_child(work, "uri", sandbox.uri)
        assert ours["state"] == "done", ours
        restored = count_docs(sandbox.uri, snapbench.DB, ORDERS)
    finally:
        sandbox.stop()
    with HeadStore(work / "head.db") as head:
        docs = list(head.export(head.require(snapbench.DB, ORDERS)))
    sandbox = Sandbox(work / "sb2")
    try:
        plain_s = plain_insert(sandbox.uri, docs)
    finally:
        sandbox.stop()
    report["target"] = {"docs": n, "restored": restored, "ours_s": ours["wall"],
                        "ours_docs_per_s": n / ours["wall"], "plain_s": plain_s,
                        "plain_docs_per_s": n / plain_s, "rss_mb": ours["rss_mb"]}


def targets(r: dict[str, Any]) -> dict[str, Any]:
    d = r["dir"]
    rss = max([d["ours_rss_mb"]] + [r[k]["rss_mb"] for k in ("pit", "target") if k in r])
    return {"dir restore wall <= restic restore": [round(d["ours_s"], 2),
                                                  round(d["restic_s"], 2),
                                                  d["ours_s"] <= d["restic_s"]],
            "peak RSS < 300 MB": [round(rss, 1), 300, rss < 300]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-restore-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, RESTIC_PASSWORD="bench", BORG_PASSPHRASE="",
               BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
               BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
    report: dict[str, Any] = {"docs": args.docs, "target_docs": args.target_docs,
                              "oplog": args.oplog}
    try:
        ids = prepare(work, args, report)
        restore_dirs(work, env, report, args.repeat)
        if not args.dir_only:
            restore_pit(work, ids, args.oplog, report)
            restore_target(work, args.target_docs, report)
        report["targets"] = targets(report)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report


def print_table(r: dict[str, Any]) -> None:
    d, p, t = r["dir"], r.get("pit"), r.get("target")
    print(f"data: {r['docs'] + r['target_docs']:,} documents, {r['head_bytes'] / 1e6:.0f} MB "
          f"of BSON (dump {r['dump_bytes'] / 1e6:.0f} MB); snapshot "
          f"{r['snapshot']['bytes_stored'] / 1e6:.0f} MB stored in {r['snapshot']['wall']:.2f} s "
          f"(restic backup {d['restic_backup_s']:.2f} s, borg create {d['borg_create_s']:.2f} s)")
    print("restore to a directory:")
    for tool in ("restic", "borg", "ours"):
        print(f"  {tool:7} {d[tool + '_s']:7.2f} s (median of {d[tool + '_runs']})  "
              f"{d[tool + '_bytes'] / 1e6:8.1f} MB")
    print(f"  ours: {d['ours_docs']:,} documents verified, peak RSS {d['ours_rss_mb']:.0f} MB; "
          f"ratios ours/restic {d['ours_s'] / d['restic_s']:.2f}, ours/borg "
          f"{d['ours_s'] / d['borg_s']:.2f}")
    print(f"  ours with every document hashed (format 1 path): {d['ours_perdoc_s']:.2f} s "
          f"(median of {d['ours_perdoc_runs']}; /restic {d['ours_perdoc_s'] / d['restic_s']:.2f})")
    print(f"  diagnostic: blocks read, checked and written without the per-document content "
          f"hash: {d['blocks_only_s']:.2f} s (median of {d['blocks_only_runs']})")
    if p is None or t is None:
        for name, (ours, ref, ok) in r["targets"].items():
            print(f"  {'PASS' if ok else 'FAIL'}  {name}: {ours} vs {ref}")
        return
    print(f"point in time: {p['entries']:,} entries rolled forward at "
          f"{p['entries_per_s']:,.0f}/s (snapshot load {p['load_s']:.1f} s, apply "
          f"{p['apply_s']:.1f} s, whole restore {p['wall_s']:.1f} s, RSS {p['rss_mb']:.0f} MB)")
    print(f"into a sandbox: {t['docs']:,} documents: ours {t['ours_docs_per_s']:,.0f} docs/s "
          f"({t['ours_s']:.1f} s, RSS {t['rss_mb']:.0f} MB), plain insert_many "
          f"{t['plain_docs_per_s']:,.0f} docs/s ({t['plain_s']:.1f} s)")
    for name, (ours, ref, ok) in r["targets"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {ours} vs {ref}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_600_000)
    parser.add_argument("--target-docs", type=int, default=100_000)
    parser.add_argument("--oplog", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="directory restores per tool")
    parser.add_argument("--workdir")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--dir-only", action="store_true",
                        help="only the directory restores (no point in time, no target)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--arg", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.workdir), args.child, args.arg)
        return
    report = run(args)
    print_table(report)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (results / f"restore-{stamp}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
