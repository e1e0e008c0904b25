"""Benchmark: reading the source (issue 4, agent work), next to plain pymongo.

Run:  .venv/bin/python bench/bench_source.py [--mb 220] [--slice-mb 10] [--in-process]

Fills a sandbox (its own process unless ``--in-process``) with ``--mb`` MB of
sample data (``sampledata.generate``), then, in the same run, reads every
collection with:

- ``find() dict``: a plain pymongo ``find()`` decoding documents to dicts
  (what "a plain pymongo find" costs an ordinary client);
- ``find() raw``: the same with ``RawBSONDocument`` (no decoding);
- ``read_range``: backupflows' slicer (hint _id + min/max index bounds,
  raw batches cut into ``--slice-mb`` slices), one range per collection;
- ``read_range + encode_slice``: the same, each slice also packed as a
  stored object (zstd level 3), as the slice task does before writing it;
- ``read_round``: oplog ingestion rounds (64 MB each) from the oldest entry to the
  newest (every insert of the sample data), raw entries.

Then the peak RSS of a fresh process that only slices every collection
(and encodes the slices), and of one that only reads the oplog in 16 MB rounds.

Each measure runs ``--repeat`` times, interleaved with the others (the
machine is shared and noisy); the table shows the best run and the median,
MB/s of the best, the best time as a ratio of the best ``find() dict``, and
the client's CPU seconds in that run (the figure least affected by load),
plus this process's peak RSS (memory must not follow the data size). Writes
JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pymongo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sandbox import sandbox  # noqa: E402

from backupflows.sandbox.sampledata import generate  # noqa: E402
from backupflows.source.client import RAW, connect  # noqa: E402
from backupflows.source.oplog_reader import read_round  # noqa: E402
from backupflows.source.slicer import encode_slice, read_range  # noqa: E402
from backupflows.source.topology import newest_optime, oldest_optime  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DATABASES = ("bench_src_a", "bench_src_b")
MiB = 1024 * 1024


@dataclass
class Row:
    name: str
    docs: int = 0
    bytes: int = 0
    seconds: float = float("inf")     # best run
    median: float = 0.0
    cpu: float = 0.0                  # client CPU seconds of the best run
    extra: str = ""

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds


def measure(named: list[tuple[str, Callable[[], tuple[int, int]], str]], repeat: int
            ) -> list[Row]:
    """Run every measure ``repeat`` times, interleaved; keep best and median."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in named}
    rows = {name: Row(name, extra=extra) for name, _, extra in named}
    for _ in range(repeat):
        for name, fn, _ in named:
            start, cpu = time.perf_counter(), time.process_time()
            docs, size = fn()
            times[name].append((time.perf_counter() - start, time.process_time() - cpu))
            rows[name].docs, rows[name].bytes = docs, size
    for name, row in rows.items():
        runs = sorted(times[name])
        (row.seconds, row.cpu), row.median = runs[0], runs[len(runs) // 2][0]
    return list(rows.values())


def plain_find(client: pymongo.MongoClient, namespaces: list[str], raw: bool,
               by_id: bool = False) -> tuple[int, int]:
    docs = size = 0
    for ns in namespaces:
        db, coll = ns.split(".", 1)
        collection = client[db][coll]
        if raw:
            cursor = collection.with_options(codec_options=RAW).find()
            for doc in cursor.hint([("_id", 1)]) if by_id else cursor:
                docs += 1
                size += len(doc.raw)
        else:
            for _doc in collection.find():
                docs += 1
    return docs, size


def slicer(client: pymongo.MongoClient, namespaces: list[str], slice_bytes: int,
           encode: bool) -> tuple[int, int]:
    docs = size = 0
    for ns in namespaces:
        for s in read_range(client, ns, None, None, None, slice_bytes):
            docs += s.count
            size += s.nbytes
            if encode:
                encode_slice(s, ns)
    return docs, size


def oplog(client: pymongo.MongoClient) -> tuple[int, int]:
    after, newest = oldest_optime(client), newest_optime(client)
    entries = size = 0
    while after < newest:   # a periodic noop may take the last round past ``newest``
        r = read_round(client, after, max_seconds=30, max_bytes=64 * MiB, until_caught_up=True,
                       await_ms=100)
        if r.gap:
            raise SystemExit(f"oplog gap during the benchmark: {r.gap_reason}")
        entries += r.count
        size += r.nbytes
        after = r.last_ts
    return entries, size


_RSS_CHILD = """
import re, sys
from backupflows.source.client import connect
from backupflows.source.oplog_reader import read_round
from backupflows.source.slicer import encode_slice, read_range
from backupflows.source.topology import newest_optime, oldest_optime
uri, what, slice_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = connect(uri)
def hwm():   # VmHWM: peak RSS of this process image (ru_maxrss survives exec)
    text = open("/proc/self/status").read()
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", text).group(1)) // 1024
base = hwm()
if what == "slices":
    for ns in sys.argv[4:]:
        for s in read_range(client, ns, None, None, None, slice_bytes):
            encode_slice(s, ns)
else:
    after, newest = oldest_optime(client), newest_optime(client)
    while after < newest:
        after = read_round(client, after, max_bytes=slice_bytes, until_caught_up=True,
                           await_ms=100).last_ts
print(base, hwm())
"""


def child_rss(uri: str, what: str, slice_bytes: int, namespaces: list[str]) -> tuple[int, int]:
    """Peak RSS (MB) of a fresh process that only slices (or only reads the
    oplog): before reading, and at the end."""
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, uri, what, str(slice_bytes),
                          *namespaces], capture_output=True, text=True, check=True)
    before, peak = out.stdout.split()
    return int(before), int(peak)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=int, default=220, help="sample data size (MB)")
    p.add_argument("--slice-mb", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--in-process", action="store_true", help="run the sandbox in this process")
    args = p.parse_args(argv)
    slice_bytes = int(args.slice_mb * MiB)
    with sandbox(args.in_process, int(args.mb * 1.5) + 128) as uri:
        plain: pymongo.MongoClient = pymongo.MongoClient(uri)
        report = generate(plain, databases=DATABASES, target_bytes=args.mb * MiB, seed=args.seed)
        namespaces = sorted(report.namespaces)
        source = connect(uri)
        rows = measure([
            ("find() dict", lambda: plain_find(plain, namespaces, raw=False), ""),
            ("read_range", lambda: slicer(source, namespaces, slice_bytes, False),
             f"{args.slice_mb:g} MiB slices"),
            ("find() raw", lambda: plain_find(plain, namespaces, raw=True), ""),
            ("find() raw, hint _id", lambda: plain_find(plain, namespaces, True, True),
             "the order slices need"),
            ("read_range + encode_slice",
             lambda: slicer(source, namespaces, slice_bytes, True), "zstd 3"),
            ("read_round (oplog)", lambda: oplog(source), "64 MB rounds"),
        ], args.repeat)
        rows[0].bytes = rows[2].bytes   # the same documents, decoded
        rss = {"slices": child_rss(uri, "slices", slice_bytes, namespaces),
               "oplog rounds": child_rss(uri, "oplog", 16 * MiB, [])}
        source.close()
        plain.close()
    show(rows, report, args, rss)


def show(rows: list[Row], report, args: argparse.Namespace,
         rss: dict[str, tuple[int, int]]) -> None:
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base = rows[0].seconds
    print(f"sample data: {report}  (sandbox {'in process' if args.in_process else 'child'})")
    print(f"{'measure':28} {'docs':>10} {'MB':>8} {'best s':>7} {'median':>7} {'MB/s':>8} "
          f"{'vs find':>7} {'cpu s':>6}")
    for r in rows:
        print(f"{r.name:28} {r.docs:10,} {r.bytes / 1e6:8.1f} {r.seconds:7.2f} {r.median:7.2f} "
              f"{r.mb_per_s:8.1f} {r.seconds / base:7.2f} {r.cpu:6.2f}  {r.extra}")
    print(f"peak RSS of this process (client side, all measures): {rss_mb:.0f} MB")
    for what, (before, peak) in rss.items():
        print(f"peak RSS of a process doing only {what}: {peak} MB (after connect: {before} MB)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_source-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({
        "benchmark": "bench_source", "args": vars(args), "peak_rss_mb": rss_mb,
        "child_rss_mb": {k: {"after_connect": a, "peak": b} for k, (a, b) in rss.items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "pymongo": pymongo.version, "platform": platform.platform()},
        "rows": [dict(asdict(r), mb_per_s=r.mb_per_s, vs_find_dict=r.seconds / base)
                 for r in rows],
    }, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
