"""Benchmark: snapshots into the blockstore next to restic and borg, same data, one run.

Run:  .venv/bin/python bench/bench_snapshot.py [--docs N] [--workdir DIR] [--keep]

1. Builds a head of ``--docs`` generated documents (~300 bytes each; default
   1.6 M, ~480 MB) by bulk-loading slices, and exports it as a mongodump
   directory (the reference tools back up that directory).
2. First backup: ``restic backup --compression auto`` (restic 0.14), ``borg
   create -C zstd,3`` (borg 1.2), and our first full snapshot.
3. 1% of the documents updated at random through the Applier ($v:2 oplog
   updates); the dump directory is re-exported in place.
4. Second backup of each: restic and borg on the re-exported dump, our
   incremental snapshot from the head.

Our snapshots run in a child process (``--take``) that reports its own wall
time and peak RSS. Stored bytes are measured on disk (``du`` of each
repository before/after). Targets (issue 5): first snapshot wall time <=
restic's and stored bytes <= 1.1x restic's; second snapshot stored bytes <= 3%
of our first and wall time <= 10% of restic's second; peak RSS < 300 MB.
Writes a JSON report to bench/results/.

Needs ``restic`` and ``borg`` on the PATH (Debian/Ubuntu: ``apt-get install
restic borgbackup``); without them it stops at once with that advice.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bson
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.son import SON
from bson.timestamp import Timestamp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backupflows.head.store import HeadStore  # noqa: E402

DB, COLL = "bench", "customers"
UI = bson.Binary(b"\x05" * 16, 4)
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "amber", "basil", "cedar", "dune", "ember", "fjord", "grove", "harbor", "islet", "jade", "knoll"]
CITIES = ("Paris", "Lima", "Oslo", "Tokyo", "Austin", "Nairobi", "Porto", "Hanoi")


# -- data ---------------------------------------------------------------------

def make_document(rng: random.Random, i: int) -> bytes:
    """~300 bytes, mixed compressibility (names, numbers, random tokens)."""
    oid = ObjectId(((1_700_000_000 + i // 50).to_bytes(4, "big")) + rng.randbytes(8))
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(3, 14)))
    return bson.encode(SON([
        ("_id", oid), ("n", i), ("name", f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}"),
        ("email", f"user{i}@{rng.choice(WORDS)}.example.com"),
        ("token", rng.randbytes(12).hex()), ("active", rng.random() < 0.5),
        ("balance", round(rng.uniform(0, 1e5), 2)), ("visits", Int64(rng.randrange(1 << 30))),
        ("created", datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=i * 7)),
        ("address", SON([("city", rng.choice(CITIES)), ("zip", f"{rng.randrange(99999):05d}")])),
        ("tags", [rng.choice(WORDS) for _ in range(rng.randrange(0, 5))]),
        ("note", words),
    ]))


def build_head(path: Path, n: int) -> tuple[HeadStore, list[ObjectId]]:
    head = HeadStore(path)
    head.ensure_collection(DB, COLL, uuid=bytes(UI))
    rng = random.Random(7)
    sample: list[ObjectId] = []
    pick = random.Random(11)
    batch: list[bytes] = []
    for i in range(n):
        doc = make_document(rng, i)
        batch.append(doc)
        if pick.random() < 0.01:
            sample.append(bson.decode(doc)["_id"])
        if len(batch) >= 50_000:
            head.load_slice(DB, COLL, batch)
            batch = []
    if batch:
        head.load_slice(DB, COLL, batch)
    return head, sample


def update_entries(ids: list[ObjectId], seed: int = 3) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for inc, _id in enumerate(ids, 1):
        diff = SON([("u", SON([("balance", round(rng.uniform(0, 1e5), 2)),
                               ("visits", Int64(rng.randrange(1 << 30)))])),
                    ("i", SON([("seen", datetime.datetime(2024, 6, 1))]))])
        out.append(bson.encode(SON([
            ("op", "u"), ("ns", f"{DB}.{COLL}"), ("ui", UI),
            ("o", SON([("$v", 2), ("diff", diff)])), ("o2", SON([("_id", _id)])),
            ("ts", Timestamp(1_800_000_000, inc)), ("t", Int64(1)), ("v", 2),
            ("wall", datetime.datetime(2024, 6, 1))])))
    return out


def export_dump(head: HeadStore, out: Path) -> None:
    from backupflows.oplog.replay import write_dump

    if out.exists():
        shutil.rmtree(out)
    write_dump(head, out)


# -- measuring ----------------------------------------------------------------

def du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


def timed_cmd(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    return time.perf_counter() - start


def peak_child_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def take_in_child(work: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--take", "--workdir", str(work)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def take_main(work: Path) -> None:
    """Child: one snapshot of the bench head (job 1), report JSON."""
    from backupflows.storage import service

    storage = service.Storage.open(f"sqlite:///{work}/catalog.db", work / "store")
    start = time.perf_counter()
    with HeadStore(work / "head.db") as head:
        sid = service.take(storage, 1, head)
    wall = time.perf_counter() - start
    with storage.reading() as s:
        row = service.get_snapshot(s, sid)
        info = {"id": sid, "kind": row.kind, "bytes_stored": row.bytes_stored,
                "bytes_logical": row.bytes_logical}
    info.update(wall=wall, rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(info))


def init_catalog(work: Path) -> None:
    from backupflows.catalog import migrate
    from backupflows.catalog.db import session_scope
    from backupflows.catalog.models import BackupJob, Deployment

    url = f"sqlite:///{work}/catalog.db"
    migrate.upgrade(url)
    with session_scope(url) as s:
        dep = Deployment(name="bench", uri="mongodb://bench/")
        s.add(dep)
        s.flush()
        s.add(BackupJob(id=1, deployment_id=dep.id, state="routine"))


# -- the run ------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-snap-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, RESTIC_PASSWORD="bench", BORG_PASSPHRASE="",
               BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes", BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
    report: dict[str, Any] = {"docs": args.docs}
    t = time.perf_counter()
    head, ids = build_head(work / "head.db", args.docs)
    report["head_build_s"] = time.perf_counter() - t
    c = head.require(DB, COLL)
    report["head_bytes"] = sum(len(d) for d in head.export(c))
    dump = work / "dump"
    export_dump(head, dump)
    head.close()
    report["dump_bytes"] = du(dump)
    init_catalog(work)
    restic, borg = work / "restic", work / "borg"
    subprocess.run(["restic", "init", "--repo", str(restic)], env=env, check=True,
                   capture_output=True)
    subprocess.run(["borg", "init", "-e", "none", str(borg)], env=env, check=True,
                   capture_output=True)
    first = backups(work, dump, restic, borg, env, "first")
    report["first"] = first
    head = HeadStore(work / "head.db")
    from backupflows.oplog.applier import Applier

    entries = update_entries(ids)
    t = time.perf_counter()
    Applier(head).apply(entries, batch_size=1000)
    report["updated_docs"] = len(entries)
    report["apply_s"] = time.perf_counter() - t
    export_dump(head, dump)
    head.close()
    report["second"] = backups(work, dump, restic, borg, env, "second")
    report["targets"] = targets(report)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return report


def backups(work: Path, dump: Path, restic: Path, borg: Path, env: dict[str, str],
            label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    before = du(restic)
    out["restic_s"] = timed_cmd(["restic", "backup", "--repo", str(restic), "--compression",
                                 "auto", "--quiet", str(dump)], env)
    out["restic_bytes"] = du(restic) - before
    before = du(borg)
    out["borg_s"] = timed_cmd(["borg", "create", "-C", "zstd,3", f"{borg}::{label}",
                               str(dump)], env)
    out["borg_bytes"] = du(borg) - before
    before = du(work / "store")
    ours = take_in_child(work)
    out["ours_s"] = ours["wall"]
    out["ours_bytes"] = du(work / "store") - before
    out["ours_catalog_bytes_stored"] = ours["bytes_stored"]
    out["ours_kind"] = ours["kind"]
    out["ours_rss_mb"] = ours["rss_mb"]
    return out


def targets(r: dict[str, Any]) -> dict[str, Any]:
    f, s = r["first"], r["second"]
    return {
        "first wall <= restic": [round(f["ours_s"], 2), round(f["restic_s"], 2),
                                 f["ours_s"] <= f["restic_s"]],
        "first bytes <= 1.1x restic": [f["ours_bytes"], f["restic_bytes"],
                                       f["ours_bytes"] <= 1.1 * f["restic_bytes"]],
        "second bytes <= 3% of first": [s["ours_bytes"], f["ours_bytes"],
                                        s["ours_bytes"] <= 0.03 * f["ours_bytes"]],
        "second wall <= 10% restic second": [round(s["ours_s"], 3), round(s["restic_s"], 2),
                                             s["ours_s"] <= 0.1 * s["restic_s"]],
        "peak RSS < 300 MB": [round(max(f["ours_rss_mb"], s["ours_rss_mb"]), 1), 300,
                              max(f["ours_rss_mb"], s["ours_rss_mb"]) < 300],
    }


def print_table(r: dict[str, Any]) -> None:
    print(f"data: {r['docs']:,} documents, {r['head_bytes'] / 1e6:.0f} MB of BSON "
          f"(dump {r['dump_bytes'] / 1e6:.0f} MB); head built in {r['head_build_s']:.1f} s; "
          f"{r['updated_docs']:,} $v:2 updates applied in {r['apply_s']:.1f} s")
    print(f"{'':8} {'tool':7} {'wall s':>8} {'stored MB':>10}")
    for label in ("first", "second"):
        for tool in ("restic", "borg", "ours"):
            d = r[label]
            print(f"{label:8} {tool:7} {d[tool + '_s']:8.2f} {d[tool + '_bytes'] / 1e6:10.2f}")
    print(f"ours peak RSS: first {r['first']['ours_rss_mb']:.0f} MB, "
          f"second {r['second']['ours_rss_mb']:.0f} MB")
    for name, (ours, ref, ok) in r["targets"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {ours} vs {ref}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_600_000)
    parser.add_argument("--workdir")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--take", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.take:
        take_main(Path(args.workdir))
        return
    missing = [tool for tool in ("restic", "borg") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"error: {' and '.join(missing)} not found: the comparison needs both "
                 "(Debian/Ubuntu: apt-get install restic borgbackup)")
    report = run(args)
    print_table(report)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (results / f"snapshot-{stamp}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
