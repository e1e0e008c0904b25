"""Removing what a job no longer needs.

- ``remove_old_heads`` (on the job's daemon): head files of generations other
  than the current one (after a resync), or all of them (terminated);
- ``purge_stored`` (anywhere with the object store): slices and their catalog
  rows of generations other than the current one, and, for a terminated job,
  every slice and oplog segment. Oplog segments of a live job's older
  generations are kept: they belong to the history of the oplog store.

Both are idempotent: deleting what is already gone is not an error.
"""

from __future__ import annotations

import os

from sqlalchemy import delete, select

from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, JobState, OplogSegment, SliceRange, SyncNamespace
from backupflows.jobs import resources


def _current(job_id: int) -> tuple[int | None, bool]:
    with session_scope(readonly=True) as s:
        job = s.get(BackupJob, job_id)
        if job is None:
            return None, True
        return job.generation, job.state == JobState.TERMINATED


def remove_old_heads(job_id: int) -> int:
    """Delete this daemon's head files of ``job_id`` that are not current."""
    generation, terminated = _current(job_id)
    keep = None if terminated else f"{job_id}-{generation}.head"
    removed = 0
    for path in resources.head_files(job_id):
        if keep is not None and path.name.startswith(keep):
            continue
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def purge_stored(job_id: int) -> int:
    """Delete stored slices (and segments) the job no longer needs; returns objects deleted."""
    generation, terminated = _current(job_id)
    store = resources.object_store()
    deleted = 0
    prefixes = [resources.slices_prefix(job_id)]
    if terminated:
        prefixes.append(resources.segments_prefix(job_id))
    keep = None if terminated else resources.slices_prefix(job_id, generation)
    for prefix in prefixes:
        for info in list(store.list(prefix)):
            if keep is None or not info.name.startswith(keep):
                store.delete(info.name)
                deleted += 1
    _purge_rows(job_id, None if terminated else generation)
    return deleted


def _purge_rows(job_id: int, keep_generation: int | None) -> None:
    with session_scope() as s:
        old = SyncNamespace.job_id == job_id
        ranges = SliceRange.job_id == job_id
        if keep_generation is not None:
            old = old & (SyncNamespace.generation != keep_generation)
            ranges = ranges & (SliceRange.generation != keep_generation)
        s.execute(delete(SliceRange).where(ranges))
        s.execute(delete(SyncNamespace).where(old))
        if keep_generation is None:
            s.execute(delete(OplogSegment).where(OplogSegment.job_id == job_id))


def stored_generations(job_id: int) -> list[int]:
    with session_scope(readonly=True) as s:
        return sorted(set(s.scalars(select(SliceRange.generation)
                                    .where(SliceRange.job_id == job_id))))
