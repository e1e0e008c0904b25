"""Oplog ingestion rounds: copy the source's oplog from a known position.

``read_round(client, after_ts, ...)`` opens a tailable ``awaitData`` cursor
on ``local.oplog.rs`` with ``{ts: {$gte: after_ts}}`` (``oplogReplay``) and
reads until ``max_seconds``, ``max_bytes`` or ``max_entries`` is reached
(or, with ``until_caught_up``, until a read finds nothing new). Entries stay
raw BSON; only ``ts`` and ``ns`` are located in each entry.

Continuity: ``after_ts`` is the ``ts`` of the last entry already stored.
The first entry the cursor returns must be that entry again (it is dropped
as a duplicate). If it is newer, or the oplog's oldest entry is newer than
``after_ts``, the entries in between are gone (the capped oplog rolled
over): the round reports ``gap=True`` and returns no entry; the caller marks
the job ``resync_required``.

Dropped at ingestion: entries whose ``ns`` is an internal namespace
(``local.*``, ``config.system.sessions``, ``config.transactions``,
``config.cache.*``, ``config.image_collection``,
``config.system.preimages``: ``backupflows.oplog.entry.is_internal``, the
same rule the applier uses). They never change user data; ``last_ts`` still
moves past them, so a round of only internal entries advances the position.
Everything else (noops included: they advance the head's optime) is kept;
namespace filters are applied when the oplog is applied, not here.

Retries: a failed ``getMore`` (dropped connection, election, killed cursor)
reopens the cursor at the last consumed ``ts`` (and drops that duplicate)
with bounded backoff (``client.Backoff``). If the oplog rolls over under the
cursor (``CappedPositionLost``) the round ends with what it has (all
contiguous); the next round then reports the gap.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

from bson.timestamp import Timestamp
from pymongo import CursorType, MongoClient
from pymongo.errors import OperationFailure, PyMongoError

from backupflows.bsonorder import find_field
from backupflows.oplog.entry import is_internal
from backupflows.oplog.segments import entry_ts, ts_int, ts_of
from backupflows.source.client import (
    DEFAULT_BACKOFF,
    RAW,
    Backoff,
    RetryBudget,
    describe,
    source_call,
)
from backupflows.source.rawdocs import spans
from backupflows.source.topology import OPLOG_COLL, OPLOG_DB, edge_optime_raw

_i32 = struct.Struct("<i").unpack_from
CAPPED_POSITION_LOST = 136
MiB = 1024 * 1024


def entry_ns(raw: bytes) -> str:
    found = find_field(raw, b"ns")
    if found is None or found[0] != 0x02:
        return ""
    pos = found[1]
    return raw[pos + 4:pos + 3 + _i32(raw, pos)[0]].decode("utf-8", "replace")


@dataclass
class Round:
    """What one round read. ``last_ts`` is the position reached (the newest
    entry consumed, kept or dropped; ``after_ts`` when nothing new), the
    next round's ``after_ts``."""

    after_ts: Timestamp
    last_ts: Timestamp
    entries: list[bytes] = field(default_factory=list)
    nbytes: int = 0
    dropped: int = 0
    gap: bool = False
    gap_reason: str = ""
    oldest_ts: Timestamp | None = None
    stop: str = ""   # time | bytes | entries | caught_up | gap | position_lost
    caught_up: bool = False   # the round read everything the source had when it ended

    @property
    def count(self) -> int:
        return len(self.entries)

    @property
    def first_ts(self) -> Timestamp | None:
        return ts_of(entry_ts(self.entries[0])) if self.entries else None


@dataclass
class _Reader:
    """State of a round across cursor reopenings."""

    round: Round
    max_bytes: int
    max_entries: int
    position: int = 0     # ts of the last entry consumed
    check_first: bool = True

    def consume(self, batch: bytes) -> bool:
        """Take the entries of one batch; True when a limit is reached."""
        r = self.round
        for start, end in spans(batch, "oplog batch"):
            raw = batch[start:end]
            ts = entry_ts(raw)
            if self.check_first:
                self.check_first = False
                if ts == self.position:
                    continue
                return self._lost(ts)
            self.position = ts
            if is_internal(entry_ns(raw)):
                r.dropped += 1
            else:
                r.entries.append(raw)
                r.nbytes += len(raw)
            if r.nbytes >= self.max_bytes or len(r.entries) >= self.max_entries:
                r.stop = "bytes" if r.nbytes >= self.max_bytes else "entries"
                return True
        return False

    def _lost(self, ts: int) -> bool:
        """The entry at our position is gone (the first entry is newer)."""
        r = self.round
        if r.entries or r.dropped:
            r.stop = "position_lost"   # keep what we have; the next round reports the gap
        else:
            r.gap, r.stop = True, "gap"
            r.gap_reason = (f"the oldest entry after {_fmt(ts_of(self.position))} is "
                            f"{_fmt(ts_of(ts))}: the entries in between were overwritten")
        return True


def read_round(client: MongoClient, after_ts: Timestamp, *, max_seconds: float = 5.0,
               max_bytes: int = 16 * MiB, max_entries: int = 100_000,
               until_caught_up: bool = False, await_ms: int = 1000,
               backoff: Backoff = DEFAULT_BACKOFF) -> Round:
    """One bounded round of oplog entries after ``after_ts`` (see the module doc)."""
    if max_seconds <= 0 or max_bytes <= 0 or max_entries <= 0:
        raise ValueError("read_round limits must be positive")
    reader = _Reader(Round(after_ts, after_ts), max_bytes, max_entries, ts_int(after_ts))
    deadline = time.monotonic() + max_seconds
    wait = max(1, min(await_ms, int(max_seconds * 1000)))
    what = f"tailing the oplog of {describe(client)}"
    with source_call(what):
        _rounds(client, reader, deadline, wait, until_caught_up, RetryBudget(backoff), what)
    reader.round.last_ts = ts_of(reader.position)
    return reader.round


def _rounds(client: MongoClient, reader: _Reader, deadline: float, wait: int,
            until_caught_up: bool, budget: RetryBudget, what: str) -> None:
    """Open (and after a transient failure reopen) the cursor until a stop."""
    checked = False
    while not reader.round.stop:
        try:
            checked = checked or not _check_oldest(client, reader.round)
            if not checked:
                return
            _tail(client, reader, deadline, wait, until_caught_up, budget)
        except OperationFailure as exc:
            if exc.code != CAPPED_POSITION_LOST:
                budget.wait_or_raise(exc, what)
            elif _position_lost(client, reader):
                return
        except PyMongoError as exc:
            budget.wait_or_raise(exc, what)
        if not reader.round.stop and time.monotonic() >= deadline:
            reader.round.stop = "time"
        reader.check_first = True


def _tail(client: MongoClient, reader: _Reader, deadline: float, wait_ms: int,
          until_caught_up: bool, budget: RetryBudget) -> None:
    """Read from ``reader.position`` until a limit, the deadline or (when
    asked) the end of the oplog; returns when the cursor dies."""
    oplog = client.get_database(OPLOG_DB, codec_options=RAW)[OPLOG_COLL]
    cursor = oplog.find_raw_batches({"ts": {"$gte": ts_of(reader.position)}},
                                    cursor_type=CursorType.TAILABLE_AWAIT,
                                    oplog_replay=True).max_await_time_ms(wait_ms)
    r = reader.round
    with cursor:
        while cursor.alive or reader.check_first:
            try:
                batch = next(cursor)
            except StopIteration:
                batch = b""
            budget.progressed()
            r.caught_up = not batch
            if batch and reader.consume(batch):
                return
            if not batch and reader.check_first:
                _empty_start(client, reader)
                return
            if time.monotonic() >= deadline:
                r.stop = "time"
                return
            if not batch and until_caught_up:
                r.stop = "caught_up"
                return


def _check_oldest(client: MongoClient, r: Round) -> bool:
    """Gap when the oplog's oldest entry is already newer than ``after_ts``."""
    oldest = edge_optime_raw(client, 1)
    r.oldest_ts = oldest
    if ts_int(oldest) > ts_int(r.after_ts):
        r.gap, r.stop = True, "gap"
        r.gap_reason = (f"the source's oldest oplog entry {_fmt(oldest)} is newer than the "
                        f"last stored one {_fmt(r.after_ts)}: the oplog rolled over")
    return r.gap


def _empty_start(client: MongoClient, reader: _Reader) -> None:
    """The cursor found no entry at or after our position at all."""
    r = reader.round
    if r.entries or r.dropped:
        r.stop = "position_lost"
        return
    if not _check_oldest(client, r):
        newest = edge_optime_raw(client, -1)
        r.gap, r.stop = True, "gap"
        r.gap_reason = (f"the last stored oplog entry {_fmt(r.after_ts)} is newer than the "
                        f"source's newest {_fmt(newest)}: the source was rolled back or "
                        "restored")


def _position_lost(client: MongoClient, reader: _Reader) -> bool:
    """``CappedPositionLost``: end the round (gap if nothing was read)."""
    r = reader.round
    if r.entries or r.dropped:
        r.stop = "position_lost"
    elif not _check_oldest(client, r):
        return False   # a race with the truncation: reopen, the first-entry check decides
    return True


def _fmt(ts: Timestamp) -> str:
    return f"Timestamp({ts.time}, {ts.inc})"
