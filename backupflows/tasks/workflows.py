"""The canvas of a backup job, and sending dispatched work.

The initial sync::

    start_sync                                    (agent)
      -> queues
    chord(group(slice_range per range), build)    (agent ... daemon.<id>)
      | apply_round | validate                    (daemon.<id>)
    and preload                                   (daemon.<id>, with PRELOAD)

The ranges are known only once ``start_sync`` has run, so it builds the
chord and queues it (``apply_async`` from the task). ``preload`` loads
slices into the head while they are being made (a slice task goes on with
other unclaimed ranges, so most range tasks find theirs done); once every
range is sliced and loaded, the preload runs build, catch-up and
validation itself, without waiting for the chord (whose ``build`` polls the
result backend and whose steps then find nothing to do). Without preload
the chord's ``build`` loads the slices. The catalog, not the canvas, is the
truth: every step checks the job's state and no-ops when it is not its turn,
and the ``reconcile`` dispatcher re-queues whatever a lost message, chord or
broker restart left undone. Daemon steps go to ``daemon_queue(job.daemon_id)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import chain, chord, group

from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob
from backupflows.jobs.config import job_config
from backupflows.jobs.dispatch import Work
from backupflows.settings import get_settings
from backupflows.tasks import backup
from backupflows.tasks.queues import AGENT, STORAGE, daemon_queue


def _dq(daemon_id: str) -> str:
    return daemon_queue(daemon_id or get_settings().daemon_id)


def head_steps(job_id: int, generation: int, daemon_id: str, token: str | None = None) -> Any:
    """build | apply_round | validate, on the job's daemon queue."""
    q = _dq(daemon_id)
    return chain(
        backup.build.si(job_id, generation, token).set(queue=q),
        backup.apply_round.si(job_id, None, daemon_id).set(queue=q),
        backup.validate_head.si(job_id, generation, None, daemon_id).set(queue=q),
    )


def slicing_canvas(job_id: int, generation: int, range_ids: list[int], daemon_id: str) -> Any:
    """The slicing chord followed by the head steps."""
    if not range_ids:
        return head_steps(job_id, generation, daemon_id)
    q = _dq(daemon_id)
    if job_config().preload:
        backup.preload.apply_async((job_id, generation), queue=q)
    slices = group(backup.slice_range.si(rid, job_id, generation).set(queue=AGENT)
                   for rid in range_ids)
    body = backup.build.si(job_id, generation).set(queue=q)
    return chain(
        chord(slices, body),
        backup.apply_round.si(job_id, None, daemon_id).set(queue=q),
        backup.validate_head.si(job_id, generation, None, daemon_id).set(queue=q),
    )


def launch_initial_sync(job_id: int, generation: int) -> str:
    """Queue the initial sync of ``job_id``; the workflow id is kept on the job."""
    result = backup.start_sync.apply_async((job_id, generation), queue=AGENT)
    with session_scope() as s:
        job = s.get(BackupJob, job_id)
        if job is not None and job.generation == generation:
            job.workflow_id = result.id
    return str(result.id)


def after_resync(job_id: int, generation: int, daemon_id: str) -> None:
    """A new generation started: drop the old head and slices, sync again."""
    backup.remove_old_heads.apply_async((job_id,), queue=_dq(daemon_id))
    backup.purge_job.apply_async((job_id,), queue=STORAGE)
    launch_initial_sync(job_id, generation)


def after_terminate(job_id: int, daemon_id: str) -> None:
    backup.remove_old_heads.apply_async((job_id,), queue=_dq(daemon_id))
    backup.purge_job.apply_async((job_id,), queue=STORAGE)


def job_daemon(job_id: int) -> str:
    """The daemon that holds the head of ``job_id`` ("" if unknown)."""
    with session_scope(readonly=True) as s:
        job = s.get(BackupJob, job_id)
        return (job.daemon_id or "") if job is not None else ""


def send_preload(job_id: int, generation: int) -> None:
    """The next preload of ``job_id``, on its daemon's queue."""
    backup.preload.apply_async((job_id, generation), queue=_dq(job_daemon(job_id)))


def send_validate(job_id: int, generation: int, daemon_id: str) -> None:
    backup.validate_head.apply_async((job_id, generation, None, daemon_id),
                                     queue=_dq(daemon_id))


def send_apply(job_id: int, daemon_id: str) -> None:
    """An apply round for ``job_id`` now (a no-op if one is running)."""
    backup.apply_round.apply_async((job_id, None, daemon_id), queue=_dq(daemon_id))


def send(work: Work) -> None:
    """Queue one dispatched ``Work`` item."""
    if work.kind == "oplog_round":
        backup.oplog_round.apply_async((work.job_id, work.token), queue=AGENT)
    elif work.kind == "apply_round":
        backup.apply_round.apply_async((work.job_id, work.token, work.daemon_id),
                                       queue=_dq(work.daemon_id))
    elif work.kind == "start":
        backup.start_sync.apply_async((work.job_id, work.generation), queue=AGENT)
    elif work.kind == "slice":
        backup.slice_range.apply_async((work.range_id, work.job_id, work.generation),
                                       queue=AGENT)
    elif work.kind == "preload":
        backup.preload.apply_async((work.job_id, work.generation, work.token),
                                   queue=_dq(work.daemon_id))
    elif work.kind == "build":
        head_steps(work.job_id, work.generation, work.daemon_id, work.token).apply_async()
    elif work.kind == "validate":
        backup.validate_head.apply_async(
            (work.job_id, work.generation, work.token, work.daemon_id),
            queue=_dq(work.daemon_id))
    else:
        raise ValueError(f"unknown work kind {work.kind!r}")


def send_all(items: Iterable[Work]) -> int:
    n = 0
    for work in items:
        send(work)
        n += 1
    return n
