"""Daemon work: validating a freshly built head, then ``routine``.

Under the head lease, in ``validating``:

1. catch up: apply every stored segment (the head is at a known optime H);
2. refetch the *missing* ``_id``s (updates that found no document while the
   oplog was applied over the slices) from the source: found documents are
   written, ids the source no longer has leave the missing set;
3. compare head and source collection by collection: counts and ``_id`` sets
   (a merge-join of two sorted streams: memory does not grow with the data);
   every differing ``_id`` is refetched (found: written; gone: deleted). A
   difference may be a write the head has not applied yet: the refetch and
   the oplog applied after it converge (the oplog's idempotent rules);
4. catch up again, then ``validating -> routine``; the slices are deleted.

The event history records what was found: ``validate.missing`` (how many
refetched, found, gone) and ``validate.compared`` (per-collection
differences and how many were repaired).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice

from pymongo import MongoClient

from backupflows.bsonorder import id_key
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, JobState, utcnow
from backupflows.errors import OplogError
from backupflows.head.catalog import Collection
from backupflows.head.store import HeadStore
from backupflows.jobs import resources
from backupflows.jobs.config import job_config
from backupflows.jobs.headwork import HeadRun, Progress, apply_stored, head_failure
from backupflows.jobs.lifecycle import HEAD, Outcome, add_event, take_job_lease, transition
from backupflows.source.compare import diff_head, source_ids
from backupflows.source.namespaces import NamespaceFilter, NamespaceInfo, list_namespaces
from backupflows.source.refetch import fetch_by_ids

BATCH = 500


@dataclass
class CompareStats:
    collections: int = 0
    only_in_head: int = 0
    only_in_source: int = 0
    repaired: int = 0
    by_ns: dict[str, dict[str, int]] = field(default_factory=dict)


def validate(job_id: int, generation: int, owner: str, token: str | None = None,
             progress: Progress | None = None) -> Outcome:
    """Validate the head (see the module docstring): ``routine``, ``busy``,
    ``skipped`` or ``resync``."""
    with session_scope() as s:
        job = s.get(BackupJob, job_id)
        if job is None or job.state != JobState.VALIDATING or job.generation != generation:
            return Outcome("skipped")
        if not take_job_lease(s, job_id, HEAD, owner, job_config().lease_seconds,
                              states=[JobState.VALIDATING], generation=generation, token=token):
            return Outcome("busy")
        filt = NamespaceFilter(job.deployment.include_ns, job.deployment.exclude_ns)
        uri = job.deployment.uri
    run = HeadRun(job_id, generation, owner, JobState.VALIDATING.value, filt, progress)
    client = resources.source_client(uri)
    try:
        with HeadStore(resources.head_path(job_id, generation)) as head:
            apply_stored(head, run)
            _refetch_missing(head, client, run)
            _compare(head, client, run)
            apply_stored(head, run)
            head_ts = head.optime().ts
    except OplogError as exc:
        return head_failure(run, exc)
    return Outcome(_to_routine(run, head_ts))


def _refetch_missing(head: HeadStore, client: MongoClient, run: HeadRun) -> None:
    total = head.missing_count()
    found = gone = 0
    for c in head.collections():
        while True:
            ids = _first(head.missing(c), BATCH)
            if not ids:
                break
            docs, lost = _fetch(client, c, ids)
            head.resolve_missing(c.db, c.name, docs, lost)
            found, gone = found + len(docs), gone + len(lost)
            run.renew()
            run.report(step="validate", missing_refetched=found + gone, missing_total=total)
    with session_scope() as s:
        add_event(s, run.job_id, "validate.missing",
                  f"refetched {found + gone} missing documents: {found} found at the source "
                  f"and written, {gone} no longer there", generation=run.generation,
                  refetched=found + gone, found=found, gone=gone)


def _first(it: Iterator[bytes], n: int) -> list[bytes]:
    try:
        return list(islice(it, n))
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _fetch(client: MongoClient, c: Collection, ids: list[bytes]
           ) -> tuple[list[bytes], list[bytes]]:
    found: list[bytes] = []
    gone: list[bytes] = []
    for rid, doc in fetch_by_ids(client, c.ns, ids):
        if doc is None:
            gone.append(rid)
        else:
            found.append(doc)
    return found, gone


def _compare(head: HeadStore, client: MongoClient, run: HeadRun) -> None:
    """Compare every collection; the source's ``_id``s of the next collection
    are read (``source_ids``: a thread, bounded) while this one is compared,
    so the source and the head are read at the same time across collections
    too, not one collection after the other."""
    stats = CompareStats()
    infos = [i for i in list_namespaces(client, run.filt) if i.type == "collection"]
    upcoming = source_ids(client, infos[0].ns) if infos else None
    try:
        for n, info in enumerate(infos):
            theirs = upcoming
            upcoming = source_ids(client, infos[n + 1].ns) if n + 1 < len(infos) else None
            assert theirs is not None
            c = _head_collection(head, info)
            stats.collections += 1
            _compare_collection(head, client, c, theirs, stats, run)
            run.renew()
            run.report(step="validate", collections_compared=stats.collections,
                       differences=stats.repaired)
    finally:
        if upcoming is not None:
            upcoming.close()
    diffs = stats.only_in_head + stats.only_in_source
    with session_scope() as s:
        add_event(s, run.job_id, "validate.compared",
                  f"compared {stats.collections} collections with the source: {diffs} _id "
                  f"differences ({stats.only_in_source} only at the source, "
                  f"{stats.only_in_head} only in the head), {stats.repaired} repaired by "
                  "refetching", generation=run.generation, collections=stats.collections,
                  only_in_head=stats.only_in_head, only_in_source=stats.only_in_source,
                  repaired=stats.repaired, by_ns=stats.by_ns)


def _head_collection(head: HeadStore, info: NamespaceInfo) -> Collection:
    c = head.catalog.get(info.db, info.coll)
    if c is not None:
        return c
    return head.ensure_collection(info.db, info.coll, uuid=info.uuid, type=info.type,
                                  options=info.options, indexes=info.indexes)


def _compare_collection(head: HeadStore, client: MongoClient, c: Collection,
                        theirs: Generator[bytes, None, None], stats: CompareStats,
                        run: HeadRun) -> None:
    """Merge-join the head's ``_id``s of ``c`` with ``theirs`` (``source_ids``)."""
    pending: list[bytes] = []
    counts = {"only_in_head": 0, "only_in_source": 0}
    with head.snapshot() as snap, closing(theirs):
        for d in diff_head(snap.export_keyed(c), theirs):
            counts[d.side] = counts.get(d.side, 0) + 1
            pending.append(d.raw_id)
            if len(pending) >= BATCH:
                stats.repaired += _repair(head, client, c, pending)
                pending = []
                run.renew()
    stats.repaired += _repair(head, client, c, pending)
    stats.only_in_head += counts["only_in_head"]
    stats.only_in_source += counts["only_in_source"]
    if counts["only_in_head"] or counts["only_in_source"]:
        stats.by_ns[c.ns] = counts


def _repair(head: HeadStore, client: MongoClient, c: Collection, ids: list[bytes]) -> int:
    """Refetch ``ids`` and make the head agree: write found, delete gone."""
    if not ids:
        return 0
    fetched = list(fetch_by_ids(client, c.ns, ids))
    with head.transaction() as w:
        for rid, doc in fetched:
            if doc is None:
                w.delete(c, id_key(rid))
            else:
                w.put(c, id_key(doc), doc)
    return len(fetched)


def _to_routine(run: HeadRun, head_ts: int) -> str:
    with session_scope() as s:
        moved = transition(s, run.job_id, JobState.ROUTINE, from_=[JobState.VALIDATING],
                           generation=run.generation,
                           message="validating -> routine: head validated",
                           values={"synced_at": utcnow(), "head_ts": head_ts,
                                   "head_lease_owner": None, "head_lease_expires": None})
    if moved:
        _delete_slices(run.job_id, run.generation)
    return "routine" if moved else "skipped"


def _delete_slices(job_id: int, generation: int) -> None:
    """The head is built and validated: its slices are no longer needed."""
    store = resources.object_store()
    for info in list(store.list(resources.slices_prefix(job_id, generation))):
        store.delete(info.name)

