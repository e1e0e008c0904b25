"""Cursors: first batches, ``getMore``, ``killCursors``, tailing.

A ``ScanCursor`` walks a collection in natural order (record ids) or in
``_id`` order (the ``_id`` index) and remembers only its position, the last
record it examined, so a ``getMore`` resumes with a range lookup, whatever
was written meanwhile, and memory never grows with the collection. Raw
documents go into batches untouched unless a filter or projection needs them
decoded. A ``ListCursor`` serves results computed up front (sorted finds,
aggregations, listings).

Tailable cursors on capped collections (the oplog) keep their position at the
end; with ``awaitData`` a ``getMore`` that finds nothing waits on the store's
condition variable, woken by every oplog append, for up to ``maxTimeMS``
(1 s by default, as the server). If the capped collection dropped the
cursor's position the cursor is killed with ``CappedPositionLost`` (136).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from backupflows.sandbox.errors import CURSOR_NOT_FOUND, CommandError
from backupflows.sandbox.storage import Collection, decode, encode

MAX_BATCH_BYTES = 16 * 1024 * 1024
DEFAULT_FIRST_BATCH = 101
CAPPED_POSITION_LOST = 136
QUERY_PLAN_KILLED = 175
IDLE_TIMEOUT_S = 600.0


@dataclass
class Bounds:
    """A range over record ids (natural scans) or ``_id`` keys (id scans)."""

    lo: Any = None
    hi: Any = None
    inclusive: tuple[bool, bool] = (True, True)
    points: list[bytes] | None = None  # an ``$in``/equality on _id: exact keys

    def contains(self, key: Any) -> bool:
        if self.points is not None:
            return key in self.points
        if self.lo is not None and (key < self.lo or (key == self.lo and not self.inclusive[0])):
            return False
        return not (self.hi is not None
                    and (key > self.hi or (key == self.hi and not self.inclusive[1])))

    @property
    def empty(self) -> bool:
        if self.points is not None:
            return not self.points
        if self.lo is None or self.hi is None:
            return False
        return self.lo > self.hi or (self.lo == self.hi and self.inclusive != (True, True))


@dataclass
class Cursor:
    """Common state of every cursor."""

    ns: str
    cursor_id: int = 0
    tailable: bool = False
    await_data: bool = False
    no_timeout: bool = False
    limit: int = 0          # documents still allowed (0 = no limit)
    returned: int = 0
    last_used: float = field(default_factory=time.monotonic)
    lsid: Any = None

    def next_batch(self, batch_size: int) -> tuple[list[bytes], bool]:
        """Up to ``batch_size`` documents (0 = as many as fit) and whether the
        cursor is exhausted."""
        raise NotImplementedError

    def _room(self, batch_size: int, count: int, size: int, raw: bytes) -> bool:
        if batch_size and count >= batch_size:
            return False
        if self.limit and self.returned + count >= self.limit:
            return False
        return not (count and size + len(raw) > MAX_BATCH_BYTES)


@dataclass
class ListCursor(Cursor):
    docs: list[bytes] = field(default_factory=list)
    pos: int = 0

    def next_batch(self, batch_size: int) -> tuple[list[bytes], bool]:
        out: list[bytes] = []
        size = 0
        while self.pos < len(self.docs) and self._room(batch_size, len(out), size,
                                                        self.docs[self.pos]):
            out.append(self.docs[self.pos])
            size += len(self.docs[self.pos])
            self.pos += 1
        self.returned += len(out)
        done = self.pos >= len(self.docs) or bool(self.limit and self.returned >= self.limit)
        return out, done


@dataclass
class ScanCursor(Cursor):
    """A resumable scan of one collection."""

    coll: Collection | None = None
    by_id: bool = False
    reverse: bool = False
    bounds: Bounds = field(default_factory=Bounds)
    id_filter: Callable[[bytes], bool] | None = None   # natural scan + _id bounds
    matcher: Callable[[dict], bool] | None = None
    projector: Callable[[dict], dict] | None = None
    raw_projector: Callable[[bytes], bytes | None] | None = None  # no decode (None: can't)
    skip: int = 0
    after: Any = None

    def _positions(self) -> Iterator[tuple[Any, int]]:
        coll = self.coll
        assert coll is not None
        if not self.by_id:
            b = self.bounds
            for rid in coll.scan_natural(self.after, self.reverse, b.lo, b.hi, b.inclusive):
                yield rid, rid
            return
        if self.bounds.points is not None:
            keys = sorted(self.bounds.points, reverse=self.reverse)
            if self.after is not None:
                keys = [k for k in keys if (k < self.after if self.reverse else k > self.after)]
            for key in keys:
                rid = coll.by_id.get(key)
                if rid is not None:
                    yield key, rid
            return
        lo, hi, (lo_incl, hi_incl) = self.bounds.lo, self.bounds.hi, self.bounds.inclusive
        if self.after is not None:
            if self.reverse:
                hi, hi_incl = self.after, False
            else:
                lo, lo_incl = self.after, False
        for key in coll.scan_ids(lo, hi, (lo_incl, hi_incl), self.reverse):
            yield key, coll.by_id[key]

    def _accept(self, raw: bytes) -> bytes | None:
        if self.id_filter is not None and not self.id_filter(raw):
            return None
        if self.matcher is None and self.projector is None:
            return raw
        if self.matcher is None and self.raw_projector is not None:
            out = self.raw_projector(raw)
            if out is not None:
                return out
        doc = decode(raw)
        if self.matcher is not None and not self.matcher(doc):
            return None
        if self.projector is not None:
            return encode(self.projector(doc))
        return raw

    def check_position(self) -> None:
        coll = self.coll
        assert coll is not None
        if (self.tailable and self.after is not None and coll.records
                and coll.records.keys()[0] > self.after):
            raise CommandError(CAPPED_POSITION_LOST,
                               f"CollectionScan died due to position in capped collection "
                               f"being deleted. Last seen record id: RecordId({self.after})",
                               "CappedPositionLost")

    def next_batch(self, batch_size: int) -> tuple[list[bytes], bool]:
        if self.bounds.empty:
            return [], not self.tailable
        out: list[bytes] = []
        size, exhausted = 0, True
        for pos, rid in self._positions():
            raw = self.coll.records[rid]
            if not self._room(batch_size, len(out), size, raw):
                exhausted = False
                break
            self.after = pos
            doc = self._accept(raw)
            if doc is None:
                continue
            if self.skip:
                self.skip -= 1
                continue
            out.append(doc)
            size += len(doc)
        self.returned += len(out)
        if self.limit and self.returned >= self.limit:
            return out, True
        return out, exhausted and not self.tailable


class CursorRegistry:
    """Open cursors by id."""

    def __init__(self) -> None:
        self.cursors: dict[int, Cursor] = {}

    def register(self, cursor: Cursor) -> int:
        cursor_id = 0
        while cursor_id == 0 or cursor_id in self.cursors:
            cursor_id = random.getrandbits(62) + 1
        cursor.cursor_id = cursor_id
        self.cursors[cursor_id] = cursor
        return cursor_id

    def get(self, cursor_id: int, ns: str) -> Cursor:
        cursor = self.cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(CURSOR_NOT_FOUND, f"cursor id {cursor_id} not found")
        if cursor.ns != ns:
            raise CommandError(13, f"Requested getMore on namespace '{ns}', but cursor "
                               f"belongs to a different namespace {cursor.ns}", "Unauthorized")
        cursor.last_used = time.monotonic()
        return cursor

    def kill(self, cursor_ids: list[int]) -> tuple[list[int], list[int]]:
        killed, missing = [], []
        for cursor_id in cursor_ids:
            if self.cursors.pop(cursor_id, None) is None:
                missing.append(cursor_id)
            else:
                killed.append(cursor_id)
        return killed, missing

    def drop(self, cursor_id: int) -> None:
        self.cursors.pop(cursor_id, None)

    def kill_for_collection(self, coll: Collection) -> None:
        """Cursors of a dropped/renamed collection die (QueryPlanKilled on getMore)."""
        for cursor in self.cursors.values():
            if isinstance(cursor, ScanCursor) and cursor.coll is coll:
                cursor.coll = None

    def reap(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        stale = [cid for cid, c in self.cursors.items()
                 if not c.no_timeout and now - c.last_used > IDLE_TIMEOUT_S]
        for cid in stale:
            del self.cursors[cid]
        return len(stale)


def id_only(raw: bytes) -> bytes | None:
    """``{_id: 1}`` projected without decoding: the document's ``_id``
    element when it is the first one (as the server stores it), else None
    (the caller decodes)."""
    if raw[5:9] != b"_id\x00":
        return None
    from backupflows.head.rawdoc import iter_elements

    for _, _, start, _, end in iter_elements(raw):
        size = end - start + 5
        return size.to_bytes(4, "little") + raw[start:end] + b"\x00"
    return None
