"""Benchmark: applying oplog entries to the head, next to plain batched
writes of the same keys and values into the same store (same run).

Run:  .venv/bin/python bench/bench_apply.py [--n N] [--batch B] [--rounds R]
          [--replay M | --replay M1,M2,...]

Reports entries/s (one core) for inserts, $v:2 updates, deletes and a mixed
workload, each with the raw rate of ``executemany`` INSERT/DELETE of the same
(cid, key, document) rows in batches of the same size into a head of the
same schema (each batch one transaction, and the store's checkpoint policy:
WAL checkpoints handed to its background thread after each commit, as the
applier's transactions do); the applier's rate per second of process CPU
time; the cost of the change-tracking index on the raw write path;
and, with ``--replay M``, ``backupflows oplog replay`` of M mixed entries
(and of M/10) as a subprocess with its peak RSS.
Targets (issue 3): inserts >= 50% of the raw write rate; $v:2 updates >=
25,000/s; replay memory independent of the entry count.
"""

from __future__ import annotations

import argparse
import datetime
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

import bson
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.son import SON
from bson.timestamp import Timestamp

from backupflows.bsonorder import id_key
from backupflows.contenthash import doc_digest
from backupflows.head.store import HeadStore
from backupflows.oplog.applier import Applier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_update import make_diff, make_document  # noqa: E402

NS = "bench.c"
UI = bson.Binary(b"\x01" * 16, 4)


class Entries:
    """Raw oplog entries with increasing timestamps."""

    def __init__(self) -> None:
        self.inc = 0

    def _entry(self, op: str, o: bytes | dict, o2: dict | None = None) -> bytes:
        self.inc += 1
        doc = SON([("op", op), ("ns", NS), ("ui", UI),
                   ("o", bson.decode(o) if isinstance(o, bytes) else o)])
        if o2 is not None:
            doc["o2"] = o2
        doc.update(ts=Timestamp(1_700_000_000 + self.inc // 100_000, self.inc),
                   t=Int64(1), v=2, wall=datetime.datetime(2024, 1, 1))
        return bson.encode(doc)

    def insert(self, raw_doc: bytes) -> bytes:
        return self._entry("i", raw_doc)

    def update(self, _id: ObjectId, diff: SON) -> bytes:
        return self._entry("u", {"$v": 2, "diff": diff}, {"_id": _id})

    def delete(self, _id: ObjectId) -> bytes:
        return self._entry("d", {"_id": _id})


def fresh_head(tmp: Path, name: str) -> HeadStore:
    head = HeadStore(tmp / f"{name}.db")
    head.ensure_collection("bench", "c", uuid=bytes(UI))
    return head


CPU_SECONDS: dict[str, float] = {}


def timed(fn: Callable[[], object], label: str | None = None) -> float:
    """Wall seconds of ``fn()``; with ``label``, its process CPU seconds (all
    threads) are kept in CPU_SECONDS."""
    cpu, start = time.process_time(), time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    if label is not None:
        CPU_SECONDS[label] = time.process_time() - cpu
    return elapsed


def raw_writes(head: HeadStore, rows: list[tuple[int, bytes, bytes, int]], batch: int,
               delete: bool = False) -> float:
    """Plain batched writes of the same rows, one transaction per batch."""
    conn = head.conn

    def run() -> None:
        for i in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            chunk = rows[i:i + batch]
            if delete:
                conn.executemany("DELETE FROM docs WHERE cid=? AND k=?",
                                 [(cid, k) for cid, k, _, _ in chunk])
            elif len(chunk[0]) == 5:  # with the stored digest, as the applier writes rows
                conn.executemany("INSERT OR REPLACE INTO docs (cid, k, doc, seq, dg)"
                                 " VALUES (?, ?, ?, ?, ?)", chunk)
            else:
                conn.executemany("INSERT OR REPLACE INTO docs (cid, k, doc, seq)"
                                 " VALUES (?, ?, ?, ?)", chunk)
            conn.execute("COMMIT")
            head.checkpoint_soon()  # the store's checkpoint policy, as for the applier
    return len(rows) / timed(run)


FLOOR: dict[str, float] = {}


def read_then_update(head: HeadStore, rows: list[tuple[int, bytes, bytes, int]],
                     batch: int) -> float:
    """The SQL an update applier cannot avoid, alone: per batch, read the old
    documents of its keys and their stored digests (``IN`` lists of 500),
    UPDATE them with their new digests, commit."""
    conn = head.conn
    dg = {k: doc_digest(d).to_bytes(32, "big") for _, k, d, _ in rows}

    def run() -> None:
        for i in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            chunk = rows[i:i + batch]
            keys = sorted({k for _, k, _, _ in chunk})
            for j in range(0, len(keys), 500):
                part = keys[j:j + 500]
                conn.execute("SELECT k, doc, dg FROM docs WHERE cid=? AND k IN ("
                             + ",".join("?" * len(part)) + ")", (chunk[0][0], *part)).fetchall()
            conn.executemany("UPDATE docs SET doc=?, seq=?, dg=? WHERE cid=? AND k=?",
                             [(d, seq, dg[k], cid, k) for cid, k, d, seq in chunk])
            conn.execute("COMMIT")
            head.checkpoint_soon()
    return len(rows) / timed(run)


def delta_alone(updates: list[bytes], docs: dict[bytes, bytes]) -> float:
    """The CPU an update applier cannot avoid, alone: parse the entry, apply
    its diff to the document (the C-codec path, fidelity check included) and
    the new document's content-hash digest (the old one is stored with the
    document: ``docs.dg``)."""
    from backupflows.oplog import crud
    from backupflows.oplog.entry import parse
    from backupflows.oplog.update import apply_delta

    def run() -> None:
        for raw in updates:
            e = parse(raw)
            doc_digest(apply_delta(docs[crud.entry_key(e)], e.o()[crud._DELTA_AT:-1]))
    return len(updates) / timed(run)


def bench_crud(n: int, batch: int, tmp: Path) -> list[tuple[str, float, float]]:
    rng = random.Random(1)
    docs = [make_document(rng, i) for i in range(n)]
    ids = [bson.decode(d)["_id"] for d in docs]
    gen = Entries()
    inserts = [gen.insert(d) for d in docs]
    updates = [gen.update(ids[rng.randrange(n)], make_diff(rng, i)) for i in range(n)]
    deletes = [gen.delete(_id) for _id in ids]
    results = []

    # raw rows: same keys and values, into a head of the same schema
    raw_head = fresh_head(tmp, "raw")
    cid = raw_head.require("bench", "c").cid
    rows = [(cid, id_key(d), d, 1) for d in docs]
    raw_insert = raw_writes(raw_head, rows, batch)
    post = {}
    head = fresh_head(tmp, "apply")
    insert_rate = n / timed(lambda: Applier(head).apply(inserts, batch_size=batch), "insert")
    # the reference measured before and after the applier (the first writes
    # of a round run on a colder machine): their mean
    after_head = fresh_head(tmp, "raw_after")
    raw_insert = (raw_insert + raw_writes(after_head, rows, batch)) / 2
    after_head.close()
    results.append(("insert", insert_rate, raw_insert))
    dg_head = fresh_head(tmp, "raw_dg")
    FLOOR["insert_dg"] = raw_writes(dg_head, [(cid, k, d, 1, doc_digest(d).to_bytes(32, "big"))
                                              for cid, k, d, _ in rows], batch)
    FLOOR["insert"] = insert_rate
    dg_head.close()

    c = head.require("bench", "c")
    for k, d in head.export_keyed(c):
        post[k] = d
    update_rate = n / timed(lambda: Applier(head).apply(updates, batch_size=batch), "update $v:2")
    c = head.require("bench", "c")
    upd_rows = [(cid, k, d, 2) for k, d in head.export_keyed(c)]
    order = [id_key(bson.encode({"_id": ids[rng.randrange(n)]})) for _ in range(n)]
    by_key = {k: d for _, k, d, _ in upd_rows}
    raw_update = raw_writes(raw_head, [(cid, k, by_key[k], 2) for k in order], batch)
    results.append(("update $v:2", update_rate, raw_update))
    FLOOR["sql"] = read_then_update(raw_head, [(cid, k, by_key[k], 3) for k in order], batch)
    FLOOR["delta"] = delta_alone(updates, post)

    delete_rate = n / timed(lambda: Applier(head).apply(deletes, batch_size=batch), "delete")
    raw_delete = raw_writes(raw_head, rows, batch, delete=True)
    results.append(("delete", delete_rate, raw_delete))

    mixed, mixed_rows = mixed_entries(n, rng, cid)
    head2 = fresh_head(tmp, "mixed")
    mixed_rate = len(mixed) / timed(lambda: Applier(head2).apply(mixed, batch_size=batch),
                                    "mixed 50/35/15")
    raw_head2 = fresh_head(tmp, "raw_mixed")
    raw_mixed = raw_mixed_writes(raw_head2, mixed_rows, batch)
    results.append(("mixed 50/35/15", mixed_rate, raw_mixed))
    for h in (raw_head, head, head2, raw_head2):
        assert h.integrity_check() == [] if h in (head, head2) else True
        h.close()
    return results


def mixed_entries(n: int, rng: random.Random, cid: int
                  ) -> tuple[list[bytes], list[tuple[str, bytes, bytes | None]]]:
    """50% inserts, 35% $v:2 updates, 15% deletes of live documents."""
    gen = Entries()
    live: list[tuple[ObjectId, bytes]] = []
    entries, rows = [], []
    for i in range(n):
        r = rng.random()
        if r < 0.5 or len(live) < 10:
            d = make_document(rng, i)
            _id = bson.decode(d)["_id"]
            live.append((_id, d))
            entries.append(gen.insert(d))
            rows.append(("i", id_key(d), d))
        elif r < 0.85:
            _id, d = live[rng.randrange(len(live))]
            entries.append(gen.update(_id, make_diff(rng, i)))
            rows.append(("i", id_key(d), d))
        else:
            _id, d = live.pop(rng.randrange(len(live)))
            entries.append(gen.delete(_id))
            rows.append(("d", id_key(d), None))
    return entries, rows


def raw_mixed_writes(head: HeadStore, rows: list[tuple[str, bytes, bytes | None]],
                     batch: int) -> float:
    cid = head.require("bench", "c").cid
    conn = head.conn

    def run() -> None:
        for i in range(0, len(rows), batch):
            conn.execute("BEGIN IMMEDIATE")
            for kind, k, d in rows[i:i + batch]:
                if kind == "i":
                    conn.execute("INSERT OR REPLACE INTO docs (cid, k, doc, seq)"
                                 " VALUES (?, ?, ?, 1)", (cid, k, d))
                else:
                    conn.execute("DELETE FROM docs WHERE cid=? AND k=?", (cid, k))
            conn.execute("COMMIT")
            head.checkpoint_soon()
    return len(rows) / timed(run)


def bench_tracking_cost(n: int, batch: int, tmp: Path) -> tuple[float, float]:
    """Raw insert rate with and without the change-tracking index docs_seq
    (best of 3 alternating rounds: the disk is noisy)."""
    rng = random.Random(2)
    docs = [make_document(rng, i) for i in range(n)]
    best = {True: 0.0, False: 0.0}
    for round_ in range(3):
        for keep in (True, False):
            head = fresh_head(tmp, f"track{keep}{round_}")
            if not keep:
                head.conn.execute("DROP INDEX docs_seq")
            cid = head.require("bench", "c").cid
            rate = raw_writes(head, [(cid, id_key(d), d, 1) for d in docs], batch)
            best[keep] = max(best[keep], rate)
            head.close()
    return best[True], best[False]


# -- replay of a large mixed oplog, peak RSS --

def write_mixed_oplog(path: Path, n: int) -> None:
    rng = random.Random(3)
    gen = Entries()
    live: list[ObjectId] = []
    template = make_document(rng, 0)
    with open(path, "wb") as f:
        for i in range(n):
            r = rng.random()
            if r < 0.5 or len(live) < 10:
                doc = bson.decode(template)
                doc["_id"] = ObjectId()
                doc["seq"] = i
                live.append(doc["_id"])
                f.write(gen.insert(bson.encode(doc)))
            elif r < 0.85:
                f.write(gen.update(live[rng.randrange(len(live))], make_diff(rng, i)))
            else:
                f.write(gen.delete(live.pop(rng.randrange(len(live)))))


def replay_rss(n: int, tmp: Path) -> tuple[float, float]:
    """(entries/s, peak RSS MiB) of `backupflows oplog replay` of n entries."""
    oplog = tmp / f"oplog{n}.bson"
    write_mixed_oplog(oplog, n)
    dump = tmp / "emptydump"
    dump.mkdir(exist_ok=True)
    out = tmp / f"out{n}"
    cmd = [sys.executable, "-c", "from backupflows.cli import main; main()", "oplog",
           "replay", "--dump", str(dump), "--oplog", str(oplog), "--out", str(out),
           "--head", str(tmp / f"replay{n}.db")]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _vm_hwm_kib(proc.pid))
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"replay of {n} entries failed with status {proc.returncode}")
    return n / elapsed, peak / 1024


def _vm_hwm_kib(pid: int) -> int:
    """Peak RSS of the process image (VmHWM; reset by exec, unlike ru_maxrss,
    which would count the forked benchmark process)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of the CRUD workloads (the machine is noisy: medians are"
                        " reported, with the range of each ratio)")
    p.add_argument("--replay", default="0",
                   help="entries for the replay RSS run: M (runs M/10 and M) or a list"
                        " M1,M2,... (e.g. 20000,200000,500000: RSS plateaus once SQLite's"
                        " 64 MiB page cache is full)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as d:
        tmp = Path(d)
        print(f"{args.n} entries, documents ~{len(make_document(random.Random(0), 0))} B, "
              f"batch {args.batch}, one core, {args.rounds} round(s): medians, [min-max] of"
              f" the ratio (each round measures the applier and its reference back to back)")
        rounds = []
        for r in range(args.rounds):
            (tmp / f"round{r}").mkdir()
            results = bench_crud(args.n, args.batch, tmp / f"round{r}")
            rounds.append(({name: (rate, raw, args.n / CPU_SECONDS[name])
                            for name, rate, raw in results}, dict(FLOOR)))
        print(f"{'workload':16} {'applied/s':>12} {'raw write/s':>12} {'ratio':>7}"
              f" {'ratio range':>12} {'applied/cpu-s':>14}")
        for name in rounds[0][0]:
            rows = [res[name] for res, _ in rounds]
            ratios = [rate / raw for rate, raw, _ in rows]
            print(f"{name:16} {median(r[0] for r in rows):12,.0f}"
                  f" {median(r[1] for r in rows):12,.0f} {median(ratios):7.0%}"
                  f" {min(ratios):5.0%}-{max(ratios):4.0%}"
                  f" {median(r[2] for r in rows):14,.0f}")
        print("(applied/cpu-s: entries per second of process CPU time, all threads: the rate"
              " if the disk never made the applier wait)")
        floors = [f for _, f in rounds]
        dg_ratios = [f["insert"] / f["insert_dg"] for f in floors]
        print(f"insert next to plain writes of the same rows with their stored digest"
              f" (docs.dg): {median(f['insert_dg'] for f in floors):,.0f}/s raw, ratio"
              f" {median(dg_ratios):.0%} [{min(dg_ratios):.0%}-{max(dg_ratios):.0%}]")
        sql, cpu = median(f["sql"] for f in floors), median(f["delta"] for f in floors)
        print(f"$v:2 update floor: read+UPDATE+commit alone {sql:,.0f}/s; parse+diff+new digest"
              f" alone {cpu:,.0f}/s; both in one thread at most {1 / (1 / sql + 1 / cpu):,.0f}/s")
        with_idx, without = bench_tracking_cost(args.n, args.batch, tmp)
        print(f"change tracking index on the raw insert path: {with_idx:,.0f}/s with, "
              f"{without:,.0f}/s without ({1 - with_idx / without:.0%} cost)")
        sizes = [int(x) for x in args.replay.split(",")]
        if len(sizes) == 1:
            sizes = [sizes[0] // 10, sizes[0]] if sizes[0] else []
        if sizes:
            for n in sizes:
                rate, rss = replay_rss(n, tmp)
                print(f"oplog replay of {n:,} mixed entries: {rate:,.0f} entries/s "
                      f"(incl. start-up and dump writing), peak RSS {rss:.0f} MiB")
    print(f"bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

