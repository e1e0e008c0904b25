"""Benchmark: $v:2 delta updates applied to ~1 KB raw BSON documents.

Run:  .venv/bin/python bench/bench_update.py [--docs N] [--rounds R]

Reports, on one core and in the same run:
- apply_delta with the diff as raw BSON (how the applier gets it from a raw
  oplog entry): the C-codec fast path (``deltadict``) where it vouches for
  the result, which it does for all of these documents;
- apply_delta_raw: the walk over raw BSON alone (the reference and fallback);
- apply_delta with the diff as a decoded dict;
- apply_modifiers with an equivalent legacy $set;
- the plain cost of bson.decode + bson.encode of the same documents (what a
  decode-modify-encode applier would pay before doing any work).
Target (issue 3): >= 25,000 $v:2 updates per second.
"""

from __future__ import annotations

import argparse
import datetime
import random
import time
from collections.abc import Callable

import bson
from bson import Int64
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.son import SON

from backupflows.oplog.delta import apply_delta_raw
from backupflows.oplog.deltadict import apply_delta_codec
from backupflows.oplog.update import apply_delta, apply_modifiers


def make_document(rng: random.Random, i: int) -> bytes:
    doc = SON([("_id", ObjectId()), ("seq", i), ("name", f"customer-{i:08d}"),
               ("email", f"user{i}@example.com"), ("active", rng.random() < 0.5),
               ("balance", rng.uniform(0, 1e6)), ("visits", Int64(rng.randrange(1 << 40))),
               ("created", datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=i)),
               ("address", SON([("street", f"{rng.randrange(999)} Main Street"),
                                ("city", rng.choice(["Paris", "Lima", "Oslo"])),
                                ("zip", f"{rng.randrange(99999):05d}"),
                                ("geo", [rng.uniform(-90, 90), rng.uniform(-180, 180)])])),
               ("tags", [f"tag{rng.randrange(50)}" for _ in range(6)]),
               ("scores", [rng.randrange(100) for _ in range(12)])])
    for k in range(12):
        doc[f"attr_{k:02d}"] = "x" * rng.randrange(20, 40)
    return bson.encode(doc)


def make_diff(rng: random.Random, i: int) -> SON:
    """A few changed fields: two top-level updates, one nested update, an
    array element update and an append."""
    return SON([
        ("u", SON([("balance", rng.uniform(0, 1e6)), ("visits", Int64(i))])),
        ("i", SON([("last_seen", datetime.datetime(2024, 6, 1))])),
        ("saddress", SON([("u", SON([("city", "Rome")]))])),
        ("sscores", SON([("a", True), ("u3", 7), ("u12", 99)])),
    ])


def rate(fn: Callable[[int], object], n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(42)
    docs = [make_document(rng, i) for i in range(args.docs)]
    diffs = [make_diff(rng, i) for i in range(args.docs)]
    entries = [RawBSONDocument(bson.encode(SON([("o", SON([("$v", 2), ("diff", d)]))])))
               for d in diffs]
    raw_diffs = [e["o"]["diff"] for e in entries]
    sets = [SON([("$v", 1), ("$set", SON([("balance", d["u"]["balance"]),
                                          ("visits", d["u"]["visits"]),
                                          ("address.city", "Rome"), ("scores.3", 7),
                                          ("scores.12", 99), ("last_seen", 0)]))])
            for d in diffs]
    size = sum(map(len, docs)) / len(docs)
    raw_bytes = [d.raw for d in raw_diffs]
    fast = sum(apply_delta_codec(docs[i], raw_bytes[i]) is not None for i in range(args.docs))
    assert all(apply_delta(docs[i], raw_bytes[i]) == apply_delta_raw(docs[i], raw_bytes[i])
               for i in range(args.docs))
    results = {
        "apply_delta (raw diff)": rate(lambda i: apply_delta(docs[i], raw_diffs[i]),
                                       args.docs, args.rounds),
        "apply_delta_raw (raw walk)": rate(lambda i: apply_delta_raw(docs[i], raw_diffs[i]),
                                           args.docs, args.rounds),
        "apply_delta (dict diff)": rate(lambda i: apply_delta(docs[i], diffs[i]),
                                        args.docs, args.rounds),
        "apply_modifiers (dict $set)": rate(lambda i: apply_modifiers(docs[i], sets[i]),
                                            args.docs, args.rounds),
        "bson.decode + bson.encode": rate(lambda i: bson.encode(bson.decode(docs[i])),
                                          args.docs, args.rounds),
    }
    print(f"{args.docs} documents of {size:.0f} bytes on average, best of {args.rounds} rounds;"
          f" the fast path vouched for {fast} of {args.docs} (both paths compared equal)")
    for name, per_second in results.items():
        print(f"  {name:30s} {per_second:10,.0f} /s   {1e6 / per_second:6.1f} us each")


if __name__ == "__main__":
    main()
