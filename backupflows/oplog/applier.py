"""Applying oplog entries to the head, in batches.

``Applier(head).apply(entries)`` streams raw BSON entries (bytes or
RawBSONDocument), applies ``batch_size`` entries per SQLite transaction and
commits the applied optime with the changes it covers. The optime only moves
forward (the maximum ``ts`` applied), so re-applying an older stretch of the
oplog never moves the head back.

A malformed or unknown entry raises OplogError naming its ``ts``, ``op`` and
``ns``; nothing after it is applied, and every entry before it is committed
(the head stays at the last good optime).
"""

from __future__ import annotations

import gc
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from operator import attrgetter
from typing import Any

import bson

from backupflows.bsonorder import KeyError_
from backupflows.errors import OplogError
from backupflows.head.catalog import Collection
from backupflows.head.optime import Optime
from backupflows.head.store import HeadStore
from backupflows.head.writer import HeadWriter
from backupflows.oplog import commands, crud
from backupflows.oplog.entry import CRUD_OPS, Entry, is_internal, parse

_BUG_ERRORS = (ValueError, TypeError, KeyError, IndexError, struct.error, KeyError_,
               bson.errors.BSONError, UnicodeDecodeError)


@dataclass
class ApplyStats:
    """What one ``apply`` call did."""

    entries: int = 0
    batches: int = 0
    last: Optime | None = None
    by_op: dict[str, int] = field(default_factory=dict)


_TS = attrgetter("ts")


class _Failed(Exception):
    def __init__(self, index: int, error: OplogError) -> None:
        self.index, self.error = index, error


class Applier:
    """Applies oplog entries to ``head``.

    ``skip_from_migrate``: skip chunk-migration writes (``fromMigrate``), for
    merging several shards into one logical copy.
    """

    def __init__(self, head: HeadStore, *, skip_from_migrate: bool = False,
                 progress: Callable[[ApplyStats], None] | None = None) -> None:
        self.head = head
        self.skip_from_migrate = skip_from_migrate
        self.progress = progress

    def apply(self, entries: Iterable[Any], batch_size: int = 1000) -> ApplyStats:
        stats = ApplyStats()
        it = iter(entries)
        while True:
            batch = [x if type(x) is bytes else _raw(x) for x in islice(it, batch_size)]
            if not batch:
                return stats
            self._apply_batch(batch, stats)
            stats.batches += 1
            if self.progress is not None:
                self.progress(stats)

    def _apply_batch(self, raws: list[bytes], stats: ApplyStats) -> None:
        try:
            with _gc_paused(), self.head.transaction() as w:
                self._run(w, raws, stats)
        except _Failed as failed:
            if failed.index:
                with self.head.transaction() as w:
                    self._run(w, raws[:failed.index], stats)
            raise failed.error from None

    def _run(self, w: HeadWriter, raws: list[bytes], stats: ApplyStats) -> None:
        parse_error: _Failed | None = None
        try:
            entries = [parse(raw) for raw in raws]
        except OplogError:  # again one by one, to know which
            entries = []
            for i, raw in enumerate(raws):
                try:
                    entries.append(parse(raw))
                except OplogError as exc:
                    parse_error = _Failed(i, exc)
                    break
        self._apply_parsed(w, entries, stats)
        if parse_error is not None:
            raise parse_error

    def _apply_parsed(self, w: HeadWriter, entries: list[Entry], stats: ApplyStats) -> None:
        start = self.head.optime()
        best_ts, best_t = start.ts, start.t
        ctx = Context(w, self.skip_from_migrate)
        ctx.prefetch(entries)
        apply, put_new, entry_key = ctx.apply, w.put_new, crud.entry_key
        # Plain inserts (a documents collection resolved before in this batch,
        # not internal, not system.views) go straight to put_new: what
        # Context.apply would do, without resolving the target again. Only
        # commands and writes to system.views change the catalog (any other
        # CRUD entry at most creates its own collection or gives it its UUID):
        # each of them clears the cache.
        plain: dict[tuple[str | None, bytes | None], Collection] = {}
        for i, e in enumerate(entries):
            op = e.op
            try:
                if (op == "i" and not e.from_migrate
                        and (c := plain.get((e.ns, e.ui))) is not None):
                    put_new(c, e.key or entry_key(e), e.o())
                else:
                    apply(e)
                    if (op != "n" and op not in CRUD_OPS) or e.coll == "system.views":
                        plain.clear()  # may have changed the catalog (views.apply_crud too)
                    elif op == "i":
                        ctx.remember_plain(e, plain)
            except OplogError as exc:
                raise _Failed(i, exc) from None
            except _BUG_ERRORS as exc:
                raise _Failed(i, e.error(f"{type(exc).__name__}: {exc}")) from None
        if entries:
            latest = max(entries, key=_TS)  # the first of the highest ts
            assert latest.ts is not None  # parse checked every ts
            if latest.ts > best_ts:
                best_ts, best_t = latest.ts, latest.t
        if best_ts != start.ts:
            w.set_optime(best_ts, best_t)
            stats.last = Optime(best_ts, best_t)
        stats.entries += len(entries)
        for op, n in Counter(e.op for e in entries).items():
            stats.by_op[op] = stats.by_op.get(op, 0) + n


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is applied: decoding
    documents and diffs allocates many short-lived containers (no cycles),
    which would set off a generation-0 collection every few hundred of them
    (~7% of a $v:2 update batch). Reference counting still frees them; the
    collector runs again after the batch (if it was enabled)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _raw(x: Any) -> bytes:
    if isinstance(x, bytes):
        return x
    raw = getattr(x, "raw", None)
    if isinstance(raw, bytes):
        return raw
    if isinstance(x, bytearray | memoryview):
        return bytes(x)
    raise OplogError(f"oplog entries must be raw BSON, got {type(x).__name__}")


class Context:
    """Applies single entries inside one head write transaction."""

    def __init__(self, w: HeadWriter, skip_from_migrate: bool) -> None:
        self.w = w
        self.skip_from_migrate = skip_from_migrate

    def prefetch(self, entries: list[Entry]) -> None:
        """Warm the document cache for updates and deletes with one query per
        collection and chunk (inserts are written blind: see put_new)."""
        wanted: dict[int, list[bytes]] = {}
        cids: dict[tuple[str | None, bytes | None], int | None] = {}
        for e in entries:
            if e.op != "u" and e.op != "d":
                continue
            where = (e.ns, e.ui)
            if where in cids:
                cid = cids[where]
            else:
                cid = cids[where] = self._prefetch_cid(e)
            if cid is None:
                continue
            try:
                wanted.setdefault(cid, []).append(crud.entry_key(e))
            except OplogError:
                continue  # reported when the entry is applied
        for cid, keys in wanted.items():
            self.w.prefetch(cid, keys)

    def _prefetch_cid(self, e: Entry) -> int | None:
        """The collection ``e`` targets, if finding it has no side effect."""
        if is_internal(e.ns or "") or not _plain_target(self.w, e):
            return None
        c = crud.target(self.w, e.db, e.coll, e.ui)
        return None if c is None else c.cid

    def remember_plain(self, e: Entry, plain: dict[tuple[str | None, bytes | None],
                                                   Collection]) -> None:
        """After ``apply`` of the insert ``e``: note its collection in
        ``plain`` if the next inserts with its ``ns`` and ``ui`` may skip
        straight to ``put_new`` (see ``Applier._apply_parsed``)."""
        ns = e.ns
        if ns is None or is_internal(ns) or e.coll == "system.views" or e.from_migrate:
            return
        c = crud.target(self.w, e.db, e.coll, e.ui)
        if c is not None and c.holds_documents:
            plain[(ns, e.ui)] = c

    def apply(self, e: Entry) -> None:
        """Apply one entry (top-level or an applyOps inner op)."""
        op = e.op
        if op in CRUD_OPS:
            if is_internal(e.ns) or (e.from_migrate and self.skip_from_migrate):  # type: ignore[arg-type]
                return
            if e.coll == "system.views":
                commands.apply_view_crud(self, e)
            elif op == "i":
                crud.apply_insert(self.w, e)
            elif op == "u":
                crud.apply_update(self.w, e)
            else:
                crud.apply_delete(self.w, e)
        elif op == "c":
            commands.apply_command(self, e)
        # "n" and the ops of SKIPPED_OPS change nothing


def _plain_target(w: HeadWriter, e: Entry) -> bool:
    """True when resolving ``e``'s target has no side effect (no UUID adoption)."""
    if e.ui is not None and e.ui in w.catalog.by_uuid:
        return True
    c = w.catalog.get(e.db, e.coll)
    return c is not None and (e.ui is None or c.uuid is not None)
