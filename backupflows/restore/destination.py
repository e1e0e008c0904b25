"""Where a restore delivers, and the one loop that feeds it.

A destination implements three primitives: ``prepare`` (every check that can
refuse the restore, BEFORE anything is written), ``write`` (one item: its
metadata and its checked document stream) and ``finish`` (make the output
final; returns where it is); ``abort`` removes what a failed restore wrote
where that is possible. ``deliver`` owns the policy: order, verification of
every item after its stream is consumed, abort on any failure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backupflows.contenthash import ContentHash
from backupflows.restore.hashpool import HashPool
from backupflows.restore.plan import Item
from backupflows.restore.verify import Checked


@dataclass
class Progress:
    """Running totals of a restore, reported to ``on_change``."""

    collections_total: int = 0
    collections_done: int = 0
    docs: int = 0
    nbytes: int = 0
    current: str = ""
    on_change: Callable[[Progress], None] | None = None

    def add(self, docs: int, nbytes: int) -> None:
        self.docs += docs
        self.nbytes += nbytes
        if self.on_change is not None:
            self.on_change(self)

    def collection_done(self) -> None:
        self.collections_done += 1
        if self.on_change is not None:
            self.on_change(self)


@dataclass
class Delivered:
    """What ``deliver`` returns: the destination's result and what was verified."""

    result: dict[str, Any]
    verified: dict[str, dict[str, Any]] = field(default_factory=dict)


class Destination(ABC):
    kind: str = ""

    @abstractmethod
    def prepare(self, items: list[Item]) -> None:
        """Refuse (``RestoreError``) before anything is written."""

    @abstractmethod
    def write(self, item: Item, stream: Checked) -> None:
        """Deliver one item: read ``stream.docs()`` or ``stream.chunks()`` to its end."""

    @abstractmethod
    def finish(self) -> dict[str, Any]:
        """Make the output final; a JSON-able description of where it is."""

    def abort(self) -> None:  # noqa: B027 - optional hook
        """Remove what a failed restore wrote, where possible."""


def deliver(items: list[Item], dest: Destination, progress: Progress | None = None
            ) -> Delivered:
    """Deliver ``items`` to ``dest``, verifying each stream (see module doc)."""
    progress = progress or Progress()
    progress.collections_total = len(items)
    verified: dict[str, dict[str, Any]] = {}
    dest.prepare(items)
    pool = HashPool() if any(_pooled(i) for i in items) else None
    try:
        for item in items:
            progress.current = item.ns
            if item.blocks is not None:
                checked = Checked(None, item.expected, item.ns, progress.add,
                                  blocks=item.blocks(), pool=pool if _pooled(item) else None,
                                  sums=item.sums)
            elif item.runs is not None:
                checked = Checked(None, item.expected, item.ns, progress.add, runs=item.runs())
            else:
                checked = Checked(item.documents(), item.expected, item.ns, progress.add)
            dest.write(item, checked)
            h: ContentHash = checked.check()
            verified[item.ns] = {"source": item.source, "type": item.meta.type,
                                 "count": h.count, "hash": h.hexdigest()}
            progress.collection_done()
        result = dest.finish()
    except BaseException:
        dest.abort()
        raise
    finally:
        if pool is not None:
            pool.close()
    return Delivered(result, verified)


POOL_MIN_DOCS = 50_000  # smaller collections hash inline (helpers cost a process start)


def _pooled(item: Item) -> bool:
    return item.blocks is not None and item.sums is None and item.expected is not None \
        and item.expected.count >= POOL_MIN_DOCS
