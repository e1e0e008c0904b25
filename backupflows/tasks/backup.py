"""Celery tasks of backup jobs: thin wrappers that take ids and call
``backupflows.jobs``. Every task is idempotent (the domain step claims its
work in the catalog) and reports progress as a ``PROGRESS`` state whose meta
always names the ``job``.

Agent tasks (``backupflows.source.*``, agent queue): ``start_sync``,
``slice_range``, ``oplog_round``. Daemon tasks (``backupflows.head.*``,
``backupflows.oplog.*``) are sent to the queue of the daemon that holds the
job's head: ``build``, ``apply_round``, ``validate``, ``check``,
``remove_old_heads``. ``backupflows.storage.purge_job`` cleans the object
store. Beat runs ``backupflows.jobs.dispatch_oplog_rounds``,
``dispatch_apply_rounds`` and ``reconcile`` (see ``celeryconfig``).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from celery import Task

from backupflows.errors import BackupflowsError, SourceError
from backupflows.jobs import dispatch, headwork, oplogstore, purge, sync, validate
from backupflows.jobs.check import check_against_source
from backupflows.jobs.config import job_config
from backupflows.jobs.errors import LeaseLost, is_transient
from backupflows.jobs.lifecycle import Outcome, fail
from backupflows.redact import redact_text
from backupflows.tasks.app import app

log = logging.getLogger(__name__)


def _owner(task: Task) -> str:
    """A lease owner unique to this execution (a redelivered message is a new one)."""
    return f"{(task.request.id or 'local')[:24]}:{uuid.uuid4().hex[:12]}"


def _progress(task: Task) -> Any:
    """Report ``meta`` as the task's ``PROGRESS`` state (result backend: the
    CLI and ``AsyncResult.info``) and as a ``task-progress`` event (Flower
    shows the task as PROGRESS with the meta as its result)."""
    def report(meta: dict[str, Any]) -> None:
        if not task.request.id:
            return
        task.update_state(state="PROGRESS", meta=meta)
        try:
            task.send_event("task-progress", result=json.dumps(meta, sort_keys=True))
        except Exception as exc:  # noqa: BLE001 - monitoring must never break the work
            log.debug("progress event not sent: %s", exc)
    return report


def _source_failure(task: Task, exc: SourceError, job_id: int, generation: int) -> str:
    """Retry a transient source failure with backoff; otherwise fail the job."""
    retries = task.request.retries or 0
    if is_transient(exc) and retries < job_config().source_retries:
        log.warning("job %s: %s (retry %d)", job_id, exc, retries + 1)
        raise task.retry(exc=exc, countdown=min(60, 2 ** retries))
    from backupflows.catalog.db import session_scope

    with session_scope() as s:
        fail(s, job_id, generation, str(exc))
    return "failed"


def _after(outcome: Outcome, job_id: int, daemon_id: str) -> str:
    if outcome.new_generation is not None:
        from backupflows.tasks import workflows

        workflows.after_resync(job_id, outcome.new_generation, daemon_id)
    return outcome.status


# -- agent ----------------------------------------------------------------------------------

@app.task(name="backupflows.source.start_sync", bind=True)
def start_sync(self: Task, job_id: int, generation: int) -> Any:
    """Record T0, the namespaces and the ranges; then queue the slicing chord
    (``apply_async`` from the task rather than ``replace``: the start keeps
    its own name and result in Flower; a repeated start queues no-ops)."""
    from backupflows.tasks import workflows

    try:
        result = sync.start_sync(job_id, generation)
    except SourceError as exc:  # includes a filter matching nothing (ConfigError): not retried
        return _source_failure(self, exc, job_id, generation)
    except BackupflowsError as exc:
        return _source_failure(self, SourceError(str(exc)), job_id, generation)
    if result.status == "skipped":
        return "skipped"
    canvas = workflows.slicing_canvas(job_id, generation, result.range_ids, result.daemon_id)
    canvas.apply_async()
    return {"job": job_id, "generation": generation, "status": result.status,
            "ranges": len(result.range_ids)}


@app.task(name="backupflows.source.slice_range", bind=True)
def slice_range(self: Task, range_id: int, job_id: int = 0, generation: int = 0) -> str:
    """Slice one ``_id`` range (resumes after its last recorded slice)."""
    try:
        return sync.slice_range(range_id, _owner(self), _progress(self),
                                more_seconds=job_config().slice_more_seconds)
    except LeaseLost as exc:
        log.info("%s", exc)
        return "lease lost"
    except SourceError as exc:
        return _source_failure(self, exc, job_id, generation)


@app.task(name="backupflows.source.oplog_round", bind=True)
def oplog_round(self: Task, job_id: int, token: str | None = None) -> str:
    """One bounded oplog round. A round that stored entries queues the next
    round at once (the source is busy) and, in routine, an apply round on the
    job's daemon (the head follows within a round); an idle source is polled
    by the beat dispatcher."""
    try:
        result = oplogstore.oplog_round(job_id, _owner(self), token)
    except SourceError as exc:
        log.warning("job %s: oplog round failed: %s", job_id, exc)
        return "error"
    if result.new_generation is not None:
        return _after(Outcome("gap", result.new_generation), job_id, result.daemon_id)
    if result.status == "stored" or result.more:
        oplog_round.apply_async((job_id,))
        if result.routine:
            from backupflows.tasks import workflows

            workflows.send_apply(job_id, result.daemon_id)
    return result.status


# -- daemon ---------------------------------------------------------------------------------

@app.task(name="backupflows.head.preload", bind=True)
def preload(self: Task, job_id: int, generation: int, token: str | None = None) -> str:
    """Load slices into the head while the ranges are being sliced. Past its
    time bound it queues the next preload (behind the work queued meanwhile);
    once every range is sliced and loaded it finishes the sync here (build,
    catch-up, validation) instead of waiting for the slicing chord, whose
    steps then find nothing left to do."""
    from backupflows.tasks import workflows

    try:
        status = headwork.preload_slices(job_id, generation, _owner(self), token,
                                         _progress(self))
    except LeaseLost as exc:
        log.info("%s", exc)
        return "lease lost"
    if status == "later":
        workflows.send_preload(job_id, generation)
    elif status == "loaded":
        return _finish_sync(self, job_id, generation)
    return status


def _finish_sync(task: Task, job_id: int, generation: int) -> str:
    """build | apply_round | validate of a preloaded head, in this task."""
    from backupflows.tasks import workflows

    owner, progress = _owner(task), _progress(task)
    daemon_id = workflows.job_daemon(job_id)
    try:
        if headwork.build_head(job_id, generation, owner, None, progress) != "loaded":
            return "loaded"  # the chord's build (or a reconcile) has it
        outcome = headwork.apply_round(job_id, owner, None, progress)
        if outcome.status != "validating":
            return _after(outcome, job_id, daemon_id)
        outcome = validate.validate(job_id, generation, owner, None, progress)
    except LeaseLost as exc:
        log.info("%s", exc)
        return "lease lost"
    except SourceError as exc:  # the validate task retries with backoff
        log.warning("job %s: validation failed: %s (retried)", job_id, exc)
        _release_head(job_id)
        workflows.send_validate(job_id, generation, daemon_id)
        return "validate queued"
    return _after(outcome, job_id, daemon_id)


@app.task(name="backupflows.head.build", bind=True)
def build(self: Task, job_id: int, generation: int, token: str | None = None) -> str:
    """Load every slice into the head (idempotent per slice)."""
    try:
        return headwork.build_head(job_id, generation, _owner(self), token, _progress(self))
    except LeaseLost as exc:
        log.info("%s", exc)
        return "lease lost"


@app.task(name="backupflows.oplog.apply_round", bind=True)
def apply_round(self: Task, job_id: int, token: str | None = None, daemon_id: str = "") -> str:
    """Apply stored oplog to the head (catch-up after the build, or routine)."""
    try:
        outcome = headwork.apply_round(job_id, _owner(self), token, _progress(self))
    except LeaseLost as exc:
        log.info("%s", exc)
        return "lease lost"
    return _after(outcome, job_id, daemon_id)


@app.task(name="backupflows.head.validate", bind=True)
def validate_head(self: Task, job_id: int, generation: int, token: str | None = None,
                  daemon_id: str = "") -> str:
    """Refetch missing documents, compare with the source, repair; then routine."""
    try:
        outcome = validate.validate(job_id, generation, _owner(self), token, _progress(self))
    except LeaseLost as exc:
        log.info("%s", exc)
        return "lease lost"
    except SourceError as exc:
        _release_head(job_id)
        return _source_failure(self, exc, job_id, generation)
    return _after(outcome, job_id, daemon_id)


def _release_head(job_id: int) -> None:
    """Free the head lease after a failed validation so a retry can take it."""
    from sqlalchemy import update

    from backupflows.catalog.db import session_scope
    from backupflows.catalog.models import BackupJob

    table = BackupJob.__table__
    with session_scope() as s:
        s.execute(update(table).where(table.c.id == job_id, table.c.state == "validating")
                  .values(head_lease_owner=None, head_lease_expires=None))


@app.task(name="backupflows.head.check")
def check(job_id: int) -> dict[str, Any]:
    """``check --against-source`` where the head is."""
    return check_against_source(job_id)


@app.task(name="backupflows.head.remove_old_heads")
def remove_old_heads(job_id: int) -> int:
    return purge.remove_old_heads(job_id)


@app.task(name="backupflows.storage.purge_job")
def purge_job(job_id: int) -> int:
    return purge.purge_stored(job_id)


# -- beat dispatchers -----------------------------------------------------------------------

def _dispatch(what: str, due: Any) -> int:
    """Send what ``due()`` finds; a catalog that is down or not migrated is one
    warning line (the next tick tries again), not a traceback every second."""
    from sqlalchemy.exc import DBAPIError

    from backupflows.tasks import workflows

    try:
        return workflows.send_all(due())
    except DBAPIError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        log.warning("%s: catalog unavailable (%s); is it migrated ('backupflows db "
                    "upgrade')?", what, redact_text(reason))
        return 0


@app.task(name="backupflows.jobs.dispatch_oplog_rounds")
def dispatch_oplog_rounds() -> int:
    return _dispatch("oplog rounds", dispatch.due_oplog_rounds)


@app.task(name="backupflows.jobs.dispatch_apply_rounds")
def dispatch_apply_rounds() -> int:
    return _dispatch("apply rounds", dispatch.due_apply_rounds)


@app.task(name="backupflows.jobs.reconcile")
def reconcile() -> int:
    return _dispatch("reconcile", dispatch.reconcile)
