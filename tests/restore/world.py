"""A real backup history to restore from, built without Celery: a head filled
by the real Applier from a generated oplog, snapshots taken by the real
snapshot code into a filesystem blockstore, and the same oplog stored as
chained segments (catalog rows + objects) the way ingestion stores them.
``World.states`` records the head's exact state (raw documents in ``_id``
order, options, indexes) at every optime a test may restore to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
from bson.codec_options import CodecOptions
from sqlalchemy import update

from backupflows.catalog.models import OplogSegment
from backupflows.catalog.snapshot_models import SnapshotPolicy
from backupflows.head.store import HeadStore
from backupflows.oplog.applier import Applier
from backupflows.oplog.segments import encode_segment, entry_ts, ts_of
from backupflows.storage import service
from backupflows.storage.backends import open_backend
from tests.storage.snapshot_helpers import add_job, make_catalog, small_opts

DECODE = CodecOptions(document_class=dict, tz_aware=False)
GENERATION = 1
SEGMENT_ENTRIES = 150


@dataclass
class NsState:
    type: str
    options: dict[str, Any]
    indexes: list[dict[str, Any]]
    docs: list[bytes]


def head_state(head: HeadStore) -> dict[str, NsState]:
    """What a restore of this head must deliver, per namespace."""
    out = {}
    for c in head.collections():
        out[c.ns] = NsState(c.type, bson.decode(c.options, DECODE),
                            [bson.decode(s, DECODE) for s in head.indexes(c)],
                            list(head.export(c)) if c.holds_documents else [])
    return out


@dataclass
class World:
    storage: service.Storage
    url: str
    job_id: int
    name: str
    head: HeadStore
    position: int = 0          # packed optime the oplog store has reached
    snapshots: dict[int, int] = field(default_factory=dict)  # snapshot id -> optime
    states: dict[int, dict[str, NsState]] = field(default_factory=dict)  # optime -> state

    def apply(self, entries: list[bytes], record_every: int = 0) -> None:
        """Apply entries to the head and store them as segments; with
        ``record_every`` the state is recorded every that many entries."""
        step = record_every or len(entries)
        for start in range(0, len(entries), step):
            chunk = entries[start:start + step]
            Applier(self.head).apply(chunk, batch_size=100)
            self._store(chunk)
            if record_every:
                self.states[entry_ts(chunk[-1])] = head_state(self.head)

    def _store(self, entries: list[bytes]) -> None:
        backend = self.storage.backend
        for start in range(0, len(entries), SEGMENT_ENTRIES):
            part = entries[start:start + SEGMENT_ENTRIES]
            after, last = self.position, entry_ts(part[-1])
            name = f"oplog/job-{self.job_id}/g{GENERATION}/{after:016x}-{last:016x}"
            backend.put(name, encode_segment(part, after_ts=ts_of(after)))
            with self.storage.sessions() as s:
                s.add(OplogSegment(job_id=self.job_id, generation=GENERATION, after_ts=after,
                                   last_ts=last, count=len(part), nbytes=0, object_name=name))
            self.position = last

    def pending_txn(self) -> int:
        return self.head.conn.execute("SELECT count(*) FROM txn_entries").fetchone()[0]

    def snapshot(self) -> int:
        sid = service.take(self.storage, self.job_id, self.head, head_generation=GENERATION,
                           opts=small_opts(), prune_tombstones=False)
        ts = self.head.optime().ts
        self.snapshots[sid] = ts
        self.states[ts] = head_state(self.head)
        return sid


def make_world(tmp: Path, name: str = "rs0", url: str | None = None) -> World:
    """A world in ``tmp`` (SQLite catalog there, or the migrated catalog ``url``)."""
    if url is None:
        url = make_catalog(tmp / "catalog.db")
    else:
        from backupflows.catalog import migrate

        migrate.upgrade(url)
    storage = service.Storage(url, open_backend(tmp / "store"))
    job_id = add_job(url, name)
    with storage.sessions() as s:
        service.policy_for(s, job_id)
        s.execute(update(SnapshotPolicy).where(SnapshotPolicy.job_id == job_id)
                  .values(pit_window_hours=24 * 365 * 50))  # the generator's clock is 2023
    tmp.mkdir(parents=True, exist_ok=True)
    head = HeadStore(tmp / "head.db")
    return World(storage, url, job_id, name, head)


def cut_without_txn(world: World, entries: list[bytes], start: int, want: int) -> int:
    """An index >= ``want`` at which no transaction is half applied."""
    i = start
    while i < want or world.pending_txn():
        world.apply(entries[i:i + 1])
        i += 1
    return i
