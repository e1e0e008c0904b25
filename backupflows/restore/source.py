"""Where a restore reads from: a snapshot, or a point in time.

Points (``--at``):

- ``SECONDS:INCREMENT``: an oplog optime (``Timestamp(SECONDS, INCREMENT)``);
- ``SECONDS``: the whole second, i.e. ``SECONDS:4294967295``;
- an ISO-8601 date in UTC (``2024-11-28T10:15:00Z``; a date without a zone
  is read as UTC): the whole second it falls in, like ``SECONDS``.

**Boundary**: the state at point P is the nearest done snapshot at or
before P, plus every stored oplog entry with ``snapshot optime < ts <= P``
(entries with ``ts`` <= the point are applied, none after it).

**Restorable window** of the deployment's current job: for every generation
of its oplog store, the stored segments form chains (each segment starts
where the previous one ended); a gap (a missing segment) splits a chain. A
done snapshot S inside a chain makes ``[S.optime, end of its chain]``
restorable; overlapping ranges merge (blockstore snapshots only: a
filesystem-store snapshot restores by id, not as the base of a point in
time). Ranges are clipped to the job's
point-in-time window (``pit_window_hours`` of its snapshot policy, counted
back from now); a snapshot's own optime stays restorable by
``--snapshot ID``. A point outside every range (before the first snapshot,
after the last stored entry, older than the window, or inside a gap) is a
``RestoreError`` naming the restorable ranges.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backupflows.catalog import optime
from backupflows.catalog.models import BackupJob, Deployment, OplogSegment
from backupflows.catalog.snapshot_models import Snapshot
from backupflows.errors import NotFound, RestoreError
from backupflows.storage import service

MAX_INC = 0xFFFFFFFF
_OPTIME = re.compile(r"^(\d+)(?::(\d+))?$")


def parse_point(text: str) -> int:
    """``--at`` as a packed optime ``t << 32 | i`` (see the module docstring)."""
    raw = (text or "").strip()
    m = _OPTIME.match(raw)
    if m is not None:
        secs, inc = int(m.group(1)), int(m.group(2)) if m.group(2) is not None else MAX_INC
        if secs >= 1 << 31 or inc > MAX_INC:
            raise RestoreError(f"--at {text!r}: optime out of range")
        return (secs << 32) | inc
    try:
        when = datetime.fromisoformat(raw.replace("z", "Z"))
    except ValueError:
        raise RestoreError(f"--at {text!r}: expected an ISO-8601 UTC date "
                           "(2024-11-28T10:15:00Z) or an optime SECONDS[:INCREMENT]") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    secs = int(when.timestamp() // 1)
    if not 0 <= secs < 1 << 31:
        raise RestoreError(f"--at {text!r}: date out of range")
    return (secs << 32) | MAX_INC


def format_point(value: int) -> str:
    t, i = value >> 32, value & MAX_INC
    date = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{t}:{i} ({date})"


@dataclass(frozen=True)
class Segment:
    after: int
    last: int
    name: str


@dataclass
class Range:
    """Restorable points ``start ..= end`` of one oplog chain of one generation."""

    generation: int
    start: int
    end: int
    chain: list[Segment] = field(default_factory=list, repr=False)

    def __contains__(self, point: int) -> bool:
        return self.start <= point <= self.end

    def to_json(self) -> dict[str, Any]:
        return {"generation": self.generation, "from": optime.to_json(self.start),
                "to": optime.to_json(self.end)}

    def __str__(self) -> str:
        return f"{format_point(self.start)} .. {format_point(self.end)}"


@dataclass
class Source:
    """A resolved restore source: a snapshot, rolled forward to ``point`` if set."""

    deployment_id: int
    deployment: str
    job_id: int
    snapshot_id: int
    snapshot_ts: int
    generation: int
    point: int | None = None
    segments: list[Segment] = field(default_factory=list)
    store: str = "blockstore"

    @property
    def rolls_forward(self) -> bool:
        return self.point is not None and self.point > self.snapshot_ts


# -- the window ---------------------------------------------------------------------------

def _chains(s: Session, job_id: int, generation: int) -> list[list[Segment]]:
    rows = s.execute(select(OplogSegment.after_ts, OplogSegment.last_ts,
                            OplogSegment.object_name)
                     .where(OplogSegment.job_id == job_id, OplogSegment.generation == generation)
                     .order_by(OplogSegment.after_ts)).all()
    chains: list[list[Segment]] = []
    for after, last, name in rows:
        seg = Segment(int(after), int(last), name)
        if chains and chains[-1][-1].last == seg.after:
            chains[-1].append(seg)
        else:
            chains.append([seg])
    return chains


def _snapshots(s: Session, job_id: int) -> list[Snapshot]:
    return list(s.execute(select(Snapshot).where(
        Snapshot.job_id == job_id, Snapshot.state == "done", Snapshot.store == "blockstore",
        Snapshot.optime_ts.is_not(None)).order_by(Snapshot.optime_ts, Snapshot.id)).scalars())


def window(s: Session, job: BackupJob, now: float | None = None) -> list[Range]:
    """The restorable ranges of ``job`` (see the module docstring), oldest first."""
    snaps = _snapshots(s, job.id)
    ranges: list[Range] = []
    for generation in sorted({sn.head_generation for sn in snaps}):
        chains = _chains(s, job.id, generation)
        for sn in (x for x in snaps if x.head_generation == generation):
            ranges.append(_range_of(generation, int(sn.optime_ts or 0), chains))
    merged = _merge(ranges)
    hours = service.policy_for(s, job.id).pit_window_hours
    floor = int((now if now is not None else time.time()) - hours * 3600) << 32
    return [r for r in (_clip(r, floor) for r in merged) if r is not None]


def _range_of(generation: int, ts: int, chains: list[list[Segment]]) -> Range:
    for chain in chains:
        if chain[0].after <= ts <= chain[-1].last:
            return Range(generation, ts, chain[-1].last, chain)
    return Range(generation, ts, ts, [])


def _merge(ranges: list[Range]) -> list[Range]:
    out: list[Range] = []
    for r in sorted(ranges, key=lambda r: (r.generation, r.start)):
        prev = out[-1] if out else None
        if prev is not None and prev.generation == r.generation and r.start <= prev.end \
                and (prev.chain is r.chain or not r.chain or r.end <= prev.end):
            prev.end = max(prev.end, r.end)
            continue
        out.append(r)
    return sorted(out, key=lambda r: (r.start, r.generation))


def _clip(r: Range, floor: int) -> Range | None:
    if r.end < floor:
        return None
    return Range(r.generation, max(r.start, floor), r.end, r.chain) if r.start < floor else r


# -- resolving ----------------------------------------------------------------------------

def deployment_job(s: Session, name: str) -> tuple[Deployment, BackupJob]:
    job = service.job_for(s, name)
    dep = s.get(Deployment, job.deployment_id)
    assert dep is not None
    return dep, job


def resolve_snapshot(s: Session, name: str, snapshot_id: int) -> Source:
    """A done blockstore snapshot of deployment ``name``."""
    dep, job = deployment_job(s, name)
    row = s.get(Snapshot, snapshot_id)
    owner = s.get(BackupJob, row.job_id) if row is not None else None
    if row is None or owner is None or owner.deployment_id != dep.id:
        raise NotFound(f"deployment {name!r} has no snapshot {snapshot_id}")
    if row.state != "done":
        raise RestoreError(f"snapshot {snapshot_id} is {row.state}, not restorable")
    return Source(dep.id, dep.name, row.job_id, row.id, int(row.optime_ts or 0),
                  row.head_generation, store=row.store)


def resolve_point(s: Session, name: str, point: int, now: float | None = None) -> Source:
    """The nearest done snapshot at or before ``point`` and the segments to apply."""
    dep, job = deployment_job(s, name)
    ranges = window(s, job, now)
    inside = [r for r in ranges if point in r]
    if not inside:
        raise RestoreError(f"{format_point(point)} is not restorable for {name!r}: "
                           + describe(ranges))
    r = max(inside, key=lambda r: r.generation)
    base = _nearest(s, job.id, r.generation, point)
    base_ts = int(base.optime_ts or 0)
    segments = [g for g in r.chain if g.last > base_ts and g.after < point]
    return Source(dep.id, dep.name, job.id, base.id, base_ts, r.generation, point, segments)


def _nearest(s: Session, job_id: int, generation: int, point: int) -> Snapshot:
    row = s.execute(select(Snapshot).where(
        Snapshot.job_id == job_id, Snapshot.state == "done", Snapshot.store == "blockstore",
        Snapshot.head_generation == generation, Snapshot.optime_ts <= point,
    ).order_by(Snapshot.optime_ts.desc(), Snapshot.id.desc()).limit(1)).scalar_one_or_none()
    if row is None:  # pragma: no cover - a range always starts at a snapshot
        raise RestoreError(f"no snapshot at or before {format_point(point)}")
    return row


def describe(ranges: list[Range]) -> str:
    if not ranges:
        return ("nothing is restorable to a point in time yet (no done snapshot with stored "
                "oplog after it inside the point-in-time window)")
    return "restorable: " + "; ".join(str(r) for r in ranges)
