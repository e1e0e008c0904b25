"""The document digests the head stores with each document (schema 2):
written by every write path, checked by the integrity check, computed for
rows of a head upgraded from schema 1, and what a snapshot sums per block."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import bson
import pytest
from sqlalchemy import select

from backupflows.catalog.snapshot_models import Snapshot
from backupflows.contenthash import doc_digest
from backupflows.errors import IntegrityError
from backupflows.head.schema import SCHEMA_VERSION
from backupflows.head.store import HeadStore
from backupflows.oplog.applier import Applier
from backupflows.storage import service
from tests.oplog.helpers import head_state
from tests.oplog.oplog_gen import generate
from tests.storage.snapshot_helpers import (  # noqa: F401 (fixtures)
    catalog,
    hashes,
    job,
    restored,
    small_opts,
    state_of,
    storage,
)


def _rows(path: Path) -> list[tuple[bytes, bytes | None]]:
    conn = sqlite3.connect(path)
    try:
        return [(bytes(d), None if g is None else bytes(g))
                for d, g in conn.execute("SELECT doc, dg FROM docs")]
    finally:
        conn.close()


def test_every_write_path_stores_the_digest_of_what_it_wrote(tmp_path: Path) -> None:
    """Inserts, blind inserts over existing keys, updates of every kind,
    replacements, deletes and DDL (random oplog of all kinds), then slices
    loaded twice (blind INSERT conflict path): every row's digest is its
    document's."""
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply(generate(seed=5, n=3000), batch_size=200)
        head.ensure_collection("d", "sl")
        sl = [bson.encode({"_id": i, "v": "x" * (i % 50)}) for i in range(700)]
        head.load_slice("d", "sl", sl)
        head.load_slice("d", "sl", [bson.encode({"_id": i, "v": "new"}) for i in range(0, 700, 3)])
        assert head.integrity_check() == []
    rows = _rows(tmp_path / "h.db")
    assert len(rows) > 800
    assert all(g is not None and int.from_bytes(g, "big") == doc_digest(d) for d, g in rows)


def test_integrity_check_finds_a_wrong_stored_digest(tmp_path: Path) -> None:
    with HeadStore(tmp_path / "h.db") as head:
        head.ensure_collection("d", "c")
        head.load_slice("d", "c", [bson.encode({"_id": i}) for i in range(10)])
    conn = sqlite3.connect(tmp_path / "h.db")
    conn.execute("UPDATE docs SET dg=zeroblob(32) WHERE k=(SELECT MIN(k) FROM docs)")
    conn.commit()
    conn.close()
    with HeadStore(tmp_path / "h.db") as head:
        problems = head.integrity_check()
    assert problems == ["d.c: 1 stored document digest(s) do not match their documents"]


def _downgrade_to_1(path: Path) -> None:
    """Turn a schema-2 head into what schema 1 wrote: no dg column."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("ALTER TABLE docs DROP COLUMN dg")
    conn.execute("UPDATE meta SET value=1 WHERE key='schema_version'")
    conn.close()


def test_a_schema_1_head_is_upgraded_and_snapshots_the_same(
        tmp_path: Path, storage: service.Storage, job: int) -> None:  # noqa: F811 (fixtures)
    oplog = generate(seed=9, n=2500)
    with HeadStore(tmp_path / "new.db") as head:
        Applier(head).apply(oplog[:2000], batch_size=250)
    _downgrade_to_1(tmp_path / "new.db")
    with HeadStore(tmp_path / "new.db") as head:  # opening upgrades in place
        Applier(head).apply(oplog[2000:], batch_size=250)  # some rows get digests again
        conn = sqlite3.connect(tmp_path / "new.db")
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        nulls, total = conn.execute("SELECT SUM(dg IS NULL), COUNT(*) FROM docs").fetchone()
        conn.close()
        assert version == SCHEMA_VERSION == 2
        assert 0 < nulls < total  # rows written by schema 1 keep NULL until rewritten
        assert head.integrity_check() == []
        with HeadStore(tmp_path / "fresh.db") as fresh:
            Applier(fresh).apply(oplog, batch_size=250)
            assert head_state(head) == head_state(fresh)
        # a full snapshot of the upgraded head: block sums (digests computed
        # for the NULL rows) add up to the head's kept hashes, and it restores
        want = state_of(head)
        sid = service.take(storage, job, head, opts=small_opts(force="full"))
        assert hashes(restored(storage, sid)) == hashes(want)


def test_a_snapshot_fails_when_stored_digests_disagree_with_the_head(
        tmp_path: Path, storage: service.Storage, job: int) -> None:  # noqa: F811 (fixtures)
    """A full layer's block sums come from the stored digests and must add
    up to the head's kept content hash: a wrong digest fails the snapshot
    (nothing marked done) instead of recording sums a restore would trust."""
    with HeadStore(tmp_path / "h.db") as head:
        head.ensure_collection("d", "c")
        head.load_slice("d", "c", [bson.encode({"_id": i, "p": "x" * 300}) for i in range(200)])
    conn = sqlite3.connect(tmp_path / "h.db")
    conn.execute("UPDATE docs SET dg=zeroblob(32) WHERE k=(SELECT MAX(k) FROM docs)")
    conn.commit()
    conn.close()
    with HeadStore(tmp_path / "h.db") as head, pytest.raises(IntegrityError, match="d.c"):
        service.take(storage, job, head, opts=small_opts())
    with storage.reading() as s:
        rows = s.execute(select(Snapshot.state, Snapshot.error)
                         .where(Snapshot.job_id == job)).all()
    assert [r.state for r in rows] == ["failed"] and "d.c" in rows[0].error
