"""Idempotency: re-applying the whole oplog, or any suffix of it, leaves the
head unchanged; applying from an earlier point on top of a later state (a
fuzzy initial sync) converges; batch size does not change the result."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import bson
import pytest

from backupflows.head.store import HeadStore
from backupflows.oplog.applier import Applier
from tests.oplog.helpers import head_state
from tests.oplog.oplog_gen import generate

N = 3000


@pytest.fixture(scope="module")
def oplog() -> list[bytes]:
    return generate(seed=7, n=N)


def comparable(head: HeadStore) -> dict[str, Any]:
    """Documents, hashes, indexes, options, optime (not the missing set,
    which re-applied updates of later-deleted documents legitimately grow)."""
    state = head_state(head)
    for value in state.values():
        if isinstance(value, dict):
            value.pop("missing")
    return state


@pytest.fixture(scope="module")
def final(oplog: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with HeadStore(tmp_path_factory.mktemp("final") / "h.db") as head:
        stats = Applier(head).apply(oplog, batch_size=500)
        assert stats.entries == len(oplog)
        assert head.integrity_check() == []
        return comparable(head)


def test_generated_oplog_exercises_every_kind(oplog: list[bytes], final: dict) -> None:
    blob = b"".join(oplog)
    for marker in (b"partialTxn", b"prepare", b"commitTransaction", b"abortTransaction",
                   b"renameCollection", b"dropTarget", b"startIndexBuild", b"abortIndexBuild",
                   b"collMod", b"dropIndexes", b"$v", b"drop\x00"):
        assert marker in blob, marker
    counts = [len(v["docs"]) for k, v in final.items() if isinstance(v, dict)]
    assert sum(counts) > 100


def test_batch_size_does_not_matter(oplog: list[bytes], final: dict, tmp_path: Path) -> None:
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply(oplog, batch_size=7)
        assert comparable(head) == final


def test_reapplying_whole_oplog_and_suffixes_changes_nothing(
        oplog: list[bytes], final: dict, tmp_path: Path) -> None:
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply(oplog, batch_size=500)
        Applier(head).apply(oplog, batch_size=333)
        assert comparable(head) == final
        rng = random.Random(3)
        for start in sorted(rng.sample(range(len(oplog)), 12)) + [len(oplog) - 1]:
            Applier(head).apply(oplog[start:], batch_size=rng.choice((1, 50, 1000)))
            assert comparable(head) == final, f"suffix from {start}"
        assert head.integrity_check() == []


def safe_starts(oplog: list[bytes]) -> list[int]:
    """Positions outside every multi-entry transaction: an initial sync starts
    its oplog at the first entry of the oldest open transaction, as the
    server's does (a replay that misses the first part of a transaction
    cannot rebuild it)."""
    open_txns: set[bytes] = set()
    starts = []
    for i, raw in enumerate(oplog):
        if not open_txns:
            starts.append(i)
        doc = bson.decode(raw)
        key = bson.encode(doc["lsid"]) if "lsid" in doc else None
        o = doc["o"]
        if key is None:
            continue
        if o.get("partialTxn") or o.get("prepare"):
            open_txns.add(key)
        elif "count" in o or "commitTransaction" in o or "abortTransaction" in o:
            open_txns.discard(key)
    return starts


def test_fuzzy_overlap_converges(oplog: list[bytes], final: dict, tmp_path: Path) -> None:
    """A head that already reflects entries up to k, fed the oplog again from
    an earlier point j, reaches the same end state."""
    rng = random.Random(11)
    starts = safe_starts(oplog)
    assert len(starts) > len(oplog) // 2
    for n in range(6):
        k = rng.randrange(1, len(oplog))
        j = rng.choice([s for s in starts if s < k] or [0])
        with HeadStore(tmp_path / f"h{n}.db") as head:
            Applier(head).apply(oplog[:k], batch_size=400)
            Applier(head).apply(oplog[j:], batch_size=400)
            assert comparable(head) == final, f"state at {k}, replay from {j}"


def test_legacy_modifier_oplog_converges_in_content(tmp_path: Path) -> None:
    """A 3.6-4.4 style oplog ($set/$unset): re-applying suffixes gives the same
    documents. Only field order may differ: a legacy $set that creates a
    field appends it, on a real secondary too (reference "Updates")."""
    oplog = generate(seed=5, n=2000, legacy=True)

    def content(head: HeadStore) -> dict[str, list[str]]:
        return {c.ns: [repr(sorted(bson.decode(d).items())) for d in head.export(c)]
                for c in head.collections()}

    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply(oplog, batch_size=300)
        want = content(head)
        rng = random.Random(5)
        for start in sorted(rng.sample(range(len(oplog)), 8)):
            Applier(head).apply(oplog[start:], batch_size=300)
            assert content(head) == want, f"suffix from {start}"
        assert head.integrity_check() == []
