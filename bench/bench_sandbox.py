"""Benchmark: the sandbox's ceiling figures (issue 2).

Run:  .venv/bin/python bench/bench_sandbox.py [--mb 256] [--in-process] [--seed 0]

Fills a sandbox with ``--mb`` MB of sample data (``sampledata.generate``,
two databases x six collections), then measures, over pymongo:

- ``generate``: insert_many(ordered=False) of the sample data;
- ``find (dict)``: a plain ``find()`` of every collection, decoded to dicts;
- ``find (raw)``: the same as RawBSONDocument (how backupflows reads slices);
- ``find (dict, ~250 B docs)``: a plain ``find()`` of small documents (the
  live-insert collection below), for the documents/s ceiling;
- ``oplog catch-up``: a tailable awaitData cursor on ``local.oplog.rs`` from
  the oldest entry to the newest (the insert entries of the sample data);
- ``oplog live``: a tailable awaitData cursor following a batch of
  insert_many writes made while it reads (first write to last entry read);
- ``oplog live, write load``: the same following an unthrottled ``WriteLoad``
  (single-document inserts, updates, replacements, deletes) on the
  collections without UUID ``_id`` values (the sandbox fails filters on
  UUIDs; see tests/sandbox/test_sampledata.py::test_write_load_on_uuid_ids).

The sandbox runs in its own process (``backupflows sandbox``) unless
``--in-process``, so client and server do not share a GIL. Prints a table
and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.cursor import CursorType

from backupflows.sandbox.sampledata import WriteLoad, generate

RAW = CodecOptions(document_class=RawBSONDocument)
RESULTS = Path(__file__).resolve().parent / "results"
DATABASES = ("bench_shop", "bench_ops")


@dataclass
class Row:
    name: str
    items: int
    bytes: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.items / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def sandbox(in_process: bool, oplog_mb: int) -> Iterator[str]:
    """A sandbox URI: in this process, or a ``backupflows sandbox`` child."""
    if in_process:
        from backupflows.sandbox.server import SandboxServer
        with SandboxServer(oplog_size_bytes=oplog_mb * 1024 * 1024) as server:
            yield server.uri
        return
    port = free_port()
    cmd = [sys.executable, "-c", "from backupflows.cli import main; main()", "sandbox",
           "--port", str(port), "--oplog-size-mb", str(oplog_mb)]
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stderr.readline()
        if "listening" not in line:
            raise SystemExit(f"sandbox did not start: {line}{child.stderr.read()}")
        yield f"mongodb://127.0.0.1:{port}/?replicaSet=rs0"
    finally:
        child.terminate()
        child.wait(10)


def bench_find(client: pymongo.MongoClient, namespaces: list[str], raw: bool) -> Row:
    items = size = 0
    start = time.perf_counter()
    for ns in namespaces:
        db, coll = ns.split(".", 1)
        collection = client[db][coll]
        if raw:
            collection = collection.with_options(codec_options=RAW)
            for doc in collection.find():
                items += 1
                size += len(doc.raw)
        else:
            for _doc in collection.find():
                items += 1
    seconds = time.perf_counter() - start
    return Row(f"find ({'raw' if raw else 'dict'})", items, size, seconds)


def tail(client: pymongo.MongoClient, from_ts, stop_when) -> tuple[int, int, float, float]:
    """Read the oplog after ``from_ts`` with a tailable awaitData cursor until
    ``stop_when(count, entry)`` (entry None after an empty batch): (entries,
    bytes, first read, last read)."""
    oplog = client.local.get_collection("oplog.rs", codec_options=RAW)
    cursor = oplog.find({"ts": {"$gt": from_ts}}, cursor_type=CursorType.TAILABLE_AWAIT,
                        oplog_replay=True).max_await_time_ms(200)
    count = size = 0
    first = time.perf_counter()
    while cursor.alive:  # an empty awaitData batch ends one iteration, not the cursor
        for entry in cursor:
            if count == 0:
                first = time.perf_counter()
            count += 1
            size += len(entry.raw)
            if stop_when(count, entry):
                cursor.close()
                return count, size, first, time.perf_counter()
        if count and stop_when(count, None):  # checked again after an empty batch
            cursor.close()
            return count, size, first, time.perf_counter()
    raise SystemExit("the tailing cursor died before reaching the expected entries")


def bench_catch_up(client: pymongo.MongoClient) -> Row:
    oplog = client.local["oplog.rs"]
    oldest = oplog.find_one(sort=[("$natural", 1)])["ts"]
    newest = oplog.find_one(sort=[("$natural", -1)])["ts"]
    start = time.perf_counter()
    count, size, _, last = tail(client, oldest, lambda n, e: e is not None and e["ts"] >= newest)
    return Row("oplog catch-up (tailable)", count, size, last - start)


def newest_ts(client: pymongo.MongoClient):
    return client.local["oplog.rs"].find_one(sort=[("$natural", -1)])["ts"]


def follow(client: pymongo.MongoClient, name: str, expected_fn, write) -> Row:
    """Tail from now in a thread while ``write()`` runs; stop after the
    number of entries ``expected_fn()`` gives once the writes are done."""
    from_ts = newest_ts(client)
    done = threading.Event()
    expected = [0]
    result: list = []

    def stop_when(n: int, _entry) -> bool:
        return done.is_set() and n >= expected[0]

    reader = threading.Thread(target=lambda: result.append(tail(client, from_ts, stop_when)))
    reader.start()
    start = time.perf_counter()
    write()
    expected[0] = expected_fn()
    done.set()
    reader.join(120)
    count, size, _, last = result[0]
    return Row(name, count, size, last - start)


def bench_live_inserts(client: pymongo.MongoClient, n: int) -> Row:
    coll = client.bench_live.inserts

    def write() -> None:
        for base in range(0, n, 1000):
            coll.insert_many([{"_id": i, "v": i, "s": "x" * 200} for i in range(base, base + 1000)],
                             ordered=False)

    return follow(client, "oplog live (insert_many)", lambda: n, write)


def bench_live_write_load(client: pymongo.MongoClient, namespaces: list[str],
                          seconds: float) -> tuple[Row, float]:
    load = WriteLoad(client, namespaces, rate_per_s=1e9, seed=1, burst=100)
    stats_holder = []

    def write() -> None:
        load.start()
        time.sleep(seconds)
        stats_holder.append(load.stop())

    row = follow(client, "oplog live (write load)", lambda: stats_holder[0].writes, write)
    return row, stats_holder[0].rate


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=int, default=256, help="sample data size (MB)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--live-inserts", type=int, default=100_000)
    p.add_argument("--load-seconds", type=float, default=5.0)
    p.add_argument("--in-process", action="store_true", help="run the sandbox in this process")
    args = p.parse_args(argv)
    oplog_mb = int(args.mb * 1.5) + 128  # room for every insert entry of the sample data
    with sandbox(args.in_process, oplog_mb) as uri:
        client: pymongo.MongoClient = pymongo.MongoClient(uri)
        report = generate(client, databases=DATABASES, target_bytes=args.mb * 1024 * 1024,
                          seed=args.seed)
        namespaces = sorted(report.namespaces)
        rows = [Row("generate (insert_many)", report.documents, report.bytes, report.seconds)]
        raw_find = bench_find(client, namespaces, raw=True)
        dict_find = bench_find(client, namespaces, raw=False)
        dict_find.bytes = raw_find.bytes  # the same documents, decoded
        rows += [dict_find, raw_find]
        rows.append(bench_catch_up(client))
        rows.append(bench_live_inserts(client, args.live_inserts))
        small = bench_find(client, ["bench_live.inserts"], raw=False)
        small.name, small.bytes = "find (dict, ~250 B docs)", rows[-1].bytes
        rows.append(small)
        load_row, load_rate = bench_live_write_load(
            client, [ns for ns in namespaces if not ns.endswith((".sessions", ".misc"))],
            args.load_seconds)
        rows.append(load_row)
        client.close()
    show(rows, report, args, load_rate)


def show(rows: list[Row], report, args: argparse.Namespace, load_rate: float) -> None:
    print(f"sample data: {report}  (sandbox {'in process' if args.in_process else 'child process'})")
    print(f"{'measure':28} {'items':>10} {'MB':>8} {'s':>7} {'items/s':>10} {'MB/s':>8}")
    for r in rows:
        print(f"{r.name:28} {r.items:10,} {r.bytes / 1e6:8.1f} {r.seconds:7.2f} "
              f"{r.per_s:10,.0f} {r.mb_per_s:8.1f}")
    print(f"write load, unthrottled: {load_rate:,.0f} writes/s (one document per command)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_sandbox-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({
        "benchmark": "bench_sandbox", "args": vars(args),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "pymongo": pymongo.version, "platform": platform.platform()},
        "write_load_writes_per_s": load_rate,
        "rows": [dict(asdict(r), per_s=r.per_s, mb_per_s=r.mb_per_s) for r in rows],
    }, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
