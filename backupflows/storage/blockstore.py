"""The blockstore: content-addressed, compressed, deduplicated blocks.

A block is identified by the SHA-256 of its uncompressed content and stored
as ``blocks/<2 hex>/<id>`` in the container envelope (``BLCK``, zstd
payload, header ``{"id": ...}``). ``put_block`` is the one place where
deduplication happens: a block the index knows (``live``) is only touched;
otherwise its object is written and then indexed (see ``blockindex`` for the
protocol with grooms). ``get_block`` checks the hash of what it reads, so a
corrupt or substituted object is an ``IntegrityError`` naming the block.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import zstandard
from sqlalchemy.orm import Session

from backupflows.catalog.models import utcnow
from backupflows.catalog.snapshot_models import Block
from backupflows.errors import IntegrityError, StorageError
from backupflows.storage import blockindex, container
from backupflows.storage.backends import Backend, ObjectNotFound

KIND = b"BLCK"
PREFIX = "blocks/"
SessionFactory = Callable[[], AbstractContextManager[Session]]


@dataclass(frozen=True)
class Prepared:
    """A block ready to store: its id, uncompressed size and enveloped bytes."""

    id: str
    size: int
    packed: bytes


@dataclass(frozen=True)
class BlockRef:
    """What a manifest records about a block it lists."""

    id: str
    size: int
    stored_size: int
    new: bool  # written by this put (False: deduplicated)


def block_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def object_name(bid: str) -> str:
    if len(bid) != 64 or any(c not in "0123456789abcdef" for c in bid):
        raise StorageError(f"bad block id {bid!r}")
    return f"{PREFIX}{bid[:2]}/{bid}"


class BlockStore:
    """Blocks in ``backend``, indexed in the catalog (``sessions()`` opens a
    catalog transaction). ``wait`` bounds how long a put waits for a groom
    that is deleting the same block."""

    def __init__(self, backend: Backend, sessions: SessionFactory, *, level: int = 3,
                 wait: float = 120.0, poll: float = 0.05) -> None:
        self.backend = backend
        self.sessions = sessions
        self.level = level
        self.wait = wait
        self.poll = poll

    # -- writing ---------------------------------------------------------

    def prepare(self, data: bytes) -> Prepared:
        """Hash and compress a block (no I/O; safe to run on worker threads)."""
        bid = block_id(data)
        return Prepared(bid, len(data), self.pack(bid, data))

    def put_block(self, data: bytes, snapshot_id: int) -> BlockRef:
        """Store ``data`` as a block referenced by ``snapshot_id``."""
        return self.put_blocks([self.prepare(data)], snapshot_id)[0]

    def put_blocks(self, blocks: list[Prepared], snapshot_id: int) -> list[BlockRef]:
        """Store blocks for ``snapshot_id``: ``dedup`` (known blocks are only
        touched), upload the others, ``index`` them."""
        refs, todo = self.dedup(blocks, snapshot_id)
        for b in todo:
            self.upload(b)
        refs.update(self.index(todo, snapshot_id))
        return [refs[b.id] for b in blocks]

    def dedup(self, blocks: list[Prepared], snapshot_id: int
              ) -> tuple[dict[str, BlockRef], list[Prepared]]:
        """THE deduplication step, one catalog transaction for many blocks:
        blocks the index knows as ``live`` are touched and referenced (their
        refs); blocks it does not know are returned to be uploaded then
        ``index``-ed; blocks being groomed go the slow way (wait, re-upload)."""
        with self.sessions() as s:
            states = blockindex.touch_many(s, snapshot_id, [b.id for b in blocks])
            stored = blockindex.stored_sizes(s, [b for b, st in states.items()
                                                 if st == blockindex.LIVE])
        refs: dict[str, BlockRef] = {}
        todo: dict[str, Prepared] = {}
        for b in blocks:
            state = states.get(b.id)
            if state == blockindex.LIVE:
                refs[b.id] = BlockRef(b.id, b.size, stored.get(b.id, 0), False)
            elif state is None:
                todo[b.id] = b
            elif b.id not in refs:
                refs[b.id] = self._put_slow(b, snapshot_id)
        return refs, list(todo.values())

    def upload(self, b: Prepared) -> None:
        self.backend.put(object_name(b.id), b.packed)

    def index(self, uploaded: list[Prepared], snapshot_id: int) -> dict[str, BlockRef]:
        """Index blocks whose objects ``upload`` stored (one transaction)."""
        if not uploaded:
            return {}
        with self.sessions() as s:
            won = blockindex.insert_many(s, snapshot_id, [(b.id, b.size, len(b.packed))
                                                          for b in uploaded])
        refs = {b.id: BlockRef(b.id, b.size, len(b.packed), True)
                for b in uploaded if b.id in won}
        for b in uploaded:  # indexed by another writer meanwhile
            if b.id not in refs:
                refs[b.id] = self._put_slow(b, snapshot_id)
        return refs

    def _put_slow(self, b: Prepared, snapshot_id: int) -> BlockRef:
        deadline = time.monotonic() + self.wait
        while True:
            with self.sessions() as s:
                state = blockindex.touch(s, snapshot_id, b.id)
            if state == blockindex.LIVE:
                return self._known(b.id, b.size)
            if state == blockindex.DELETING:
                self._await_deletion(b.id, deadline)
                continue
            self.backend.put(object_name(b.id), b.packed)
            with self.sessions() as s:
                if blockindex.insert_block(s, snapshot_id, b.id, b.size, len(b.packed)):
                    return BlockRef(b.id, b.size, len(b.packed), True)

    def pack(self, bid: str, data: bytes) -> bytes:
        return container.pack(KIND, {"id": bid}, data, level=self.level)

    def _known(self, bid: str, size: int) -> BlockRef:
        with self.sessions() as s:
            row = s.get(Block, bid)
            stored = row.stored_size if row is not None else 0
        return BlockRef(bid, size, stored, False)

    def _await_deletion(self, bid: str, deadline: float) -> None:
        """Wait until a groom has removed ``bid``; finish the removal when
        that groom is gone."""
        while time.monotonic() < deadline:
            with self.sessions() as s:
                if blockindex.deleting_owner_lapsed(s, bid, utcnow()):
                    self.backend.delete(object_name(bid))
                    blockindex.forget_block(s, bid)
                    return
                row = s.get(Block, bid)
                if row is None or row.state != blockindex.DELETING:
                    return
            time.sleep(self.poll)
        raise StorageError(f"block {bid} is being groomed and the groom does not finish; "
                           "retry the snapshot")

    # -- reading ---------------------------------------------------------

    def get_block(self, bid: str) -> bytes:
        """The content of block ``bid``, checked against its id."""
        name = object_name(bid)
        try:
            raw = self.backend.get(name)
        except ObjectNotFound:
            raise IntegrityError(f"block {bid} is missing from the store ({name})") from None
        return unpack_block(bid, raw)

    def iter_blocks(self, ids: list[str], prefetch: int = 2) -> Iterator[bytes]:
        """The contents of ``ids`` in order (reads ahead ``prefetch`` blocks on threads)."""
        if prefetch <= 0 or len(ids) <= 1:
            for bid in ids:
                yield self.get_block(bid)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=prefetch) as pool:
            futures = [pool.submit(self.get_block, b) for b in ids[:prefetch]]
            for i in range(len(ids)):
                data = futures[i].result()
                futures[i] = None  # type: ignore[call-overload]
                nxt = i + prefetch
                if nxt < len(ids):
                    futures.append(pool.submit(self.get_block, ids[nxt]))
                yield data

    def verify_block(self, bid: str) -> str | None:
        """None if block ``bid`` reads back intact, else what is wrong."""
        try:
            self.get_block(bid)
        except StorageError as exc:
            return str(exc)
        return None

    def delete_object(self, bid: str) -> None:
        self.backend.delete(object_name(bid))

    def list_objects(self) -> Iterator[tuple[str, int]]:
        """(block id, object size) of every block object in the store."""
        for info in self.backend.list(PREFIX):
            yield info.name.rsplit("/", 1)[-1], info.size


def unpack_block(bid: str, raw: bytes) -> bytes:
    what = f"block {bid}"
    try:
        header, data = container.unpack(raw, kind=KIND, what=what)
    except zstandard.ZstdError as exc:  # pragma: no cover - container maps these
        raise IntegrityError(f"{what}: corrupt payload: {exc}") from None
    if header.get("id") != bid or block_id(data) != bid:
        raise IntegrityError(f"{what}: content does not match its hash")
    return data
