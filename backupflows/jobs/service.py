"""What the operator asks for: deployments, and start/stop/resync/terminate
of their backup jobs (catalog side only; the command line then queues the
Celery work, see ``backupflows.tasks.workflows``).

A deployment has at most one current job: its newest ``backup_jobs`` row. A
terminated job stays in the catalog as history; ``jobs start`` after it
creates a new row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pymongo.errors import ConfigurationError, InvalidURI
from pymongo.uri_parser import parse_uri
from sqlalchemy import select
from sqlalchemy.orm import Session

from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, Deployment, JobState
from backupflows.errors import ConfigError, Conflict, NotFound
from backupflows.jobs.lifecycle import ACTIVE, RESTARTABLE, add_event, begin_generation, transition
from backupflows.redact import redact_text
from backupflows.source.client import display_uri
from backupflows.source.namespaces import NamespaceFilter

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")


@dataclass(frozen=True)
class JobRef:
    """Which job/generation a command acted on, and what it did."""

    job_id: int
    generation: int
    daemon_id: str
    action: str  # started | resumed | restarted | stopped | resync | terminated


# -- deployments ------------------------------------------------------------------

def validate_uri(uri: str) -> str:
    """``uri`` if it parses as a MongoDB connection string, else ``ConfigError``
    (the message shows the URI with its password masked)."""
    text = (uri or "").strip()
    if not text.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError(f"bad URI {display_uri(text)!r}: expected mongodb://host:port/"
                          "?replicaSet=NAME (or mongodb+srv://)")
    try:
        parse_uri(text)
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        raise ConfigError(f"bad URI {display_uri(text)!r}: {redact_text(str(exc))}") from None
    return text


def add_deployment(name: str, uri: str, include: list[str], exclude: list[str]) -> dict[str, Any]:
    """Record a deployment; the URI is validated and never shown unmasked."""
    if not _NAME.fullmatch(name or ""):
        raise ConfigError(f"bad deployment name {name!r}: use letters, digits, '.', '_' and '-'"
                          " (at most 200, starting with a letter or digit)")
    uri = validate_uri(uri)
    filt = NamespaceFilter(list(include), list(exclude))
    with session_scope() as s:
        if s.scalar(select(Deployment.id).where(Deployment.name == name)) is not None:
            raise Conflict(f"deployment {name!r} already exists")
        dep = Deployment(name=name, uri=uri, include_ns=list(filt.include),
                         exclude_ns=list(filt.exclude))
        s.add(dep)
        s.flush()
        return deployment_row(dep, None)


def deployment_row(dep: Deployment, job: BackupJob | None) -> dict[str, Any]:
    """The ``deployments list --json`` shape (stable keys)."""
    return {"name": dep.name, "uri": display_uri(dep.uri), "include": list(dep.include_ns),
            "exclude": list(dep.exclude_ns), "job_state": job.state if job else None,
            "created_at": dep.created_at.isoformat()}


def list_deployments() -> list[dict[str, Any]]:
    with session_scope(readonly=True) as s:
        deps = s.scalars(select(Deployment).order_by(Deployment.name)).all()
        return [deployment_row(d, current_job(s, d.id)) for d in deps]


def get_deployment(session: Session, name: str) -> Deployment:
    dep = session.scalar(select(Deployment).where(Deployment.name == name))
    if dep is None:
        raise NotFound(f"no deployment named {name!r} (add it with 'backupflows deployments "
                       "add NAME --uri URI')")
    return dep


def current_job(session: Session, deployment_id: int) -> BackupJob | None:
    return session.scalar(select(BackupJob).where(BackupJob.deployment_id == deployment_id)
                          .order_by(BackupJob.id.desc()).limit(1))


def require_job(session: Session, name: str) -> BackupJob:
    job = current_job(session, get_deployment(session, name).id)
    if job is None:
        raise NotFound(f"deployment {name!r} has no backup job: start one with "
                       f"'backupflows jobs start {name}'")
    return job


# -- jobs ---------------------------------------------------------------------------

def start_job(name: str, daemon_id: str) -> JobRef:
    """Start (or restart) the backup of deployment ``name``.

    No job yet, or terminated: a new job in initial sync on ``daemon_id``.
    Stopped after its head was built: back to routine (the next oplog round
    finds out whether the oplog still connects). Stopped before that,
    failed, or resync required: a new initial sync. Running: ``Conflict``.
    """
    with session_scope() as s:
        dep = get_deployment(s, name)
        job = current_job(s, dep.id)
        if job is None or job.state == JobState.TERMINATED:
            return _create_job(s, dep, daemon_id)
        if job.state in ACTIVE:
            raise Conflict(f"the backup job of {name!r} is already running (state {job.state}):"
                           f" use 'backupflows jobs resync {name}' to start over")
        if _resume_routine(s, job):
            return JobRef(job.id, job.generation, job.daemon_id or daemon_id, "resumed")
        generation = begin_generation(s, job, "started by the operator", RESTARTABLE)
        if generation is None:
            raise Conflict(f"the backup job of {name!r} changed state meanwhile: try again")
        return JobRef(job.id, generation, job.daemon_id or daemon_id, "restarted")


def _resume_routine(session: Session, job: BackupJob) -> bool:
    """A stopped job whose head was built goes straight back to routine."""
    if job.state != JobState.STOPPED or job.synced_at is None or not job.head_ts:
        return False
    return transition(session, job.id, JobState.ROUTINE, from_=[JobState.STOPPED],
                      generation=job.generation, message="stopped -> routine: restarted")


def _create_job(session: Session, dep: Deployment, daemon_id: str) -> JobRef:
    job = BackupJob(deployment_id=dep.id, state=JobState.INITIAL_SYNC.value, daemon_id=daemon_id,
                    generation=1)
    session.add(job)
    session.flush()
    add_event(session, job, "job.created",
              f"backup job of {dep.name} created; its head lives on daemon {daemon_id}",
              daemon_id=daemon_id)
    add_event(session, job, "sync.started", "initial sync (generation 1) started",
              generation=1, reason="job created")
    return JobRef(job.id, 1, daemon_id, "started")


def stop_job(name: str) -> JobRef:
    """Stop a job: its tasks stop at their next step; data is kept."""
    with session_scope() as s:
        job = require_job(s, name)
        if job.state in (JobState.STOPPED, JobState.TERMINATED):
            raise Conflict(f"the backup job of {name!r} is already {job.state}")
        if not transition(s, job.id, JobState.STOPPED, from_=[*ACTIVE, *RESTARTABLE],
                          message=f"{job.state} -> stopped: stopped by the operator"):
            raise Conflict(f"the backup job of {name!r} changed state meanwhile: try again")
        return JobRef(job.id, job.generation, job.daemon_id or "", "stopped")


def resync_job(name: str) -> JobRef:
    """Throw the head away and start a new initial sync (new generation)."""
    with session_scope() as s:
        job = require_job(s, name)
        if job.state == JobState.TERMINATED:
            raise Conflict(f"the backup job of {name!r} is terminated: "
                           f"'backupflows jobs start {name}' creates a new one")
        generation = begin_generation(s, job, "resync requested by the operator",
                                      [*ACTIVE, *RESTARTABLE])
        if generation is None:
            raise Conflict(f"the backup job of {name!r} changed state meanwhile: try again")
        return JobRef(job.id, generation, job.daemon_id or "", "resync")


def terminate_job(name: str) -> JobRef:
    """End a job for good; its stored slices, segments and head are removed."""
    with session_scope() as s:
        job = require_job(s, name)
        if job.state == JobState.TERMINATED:
            raise Conflict(f"the backup job of {name!r} is already terminated")
        if not transition(s, job.id, JobState.TERMINATED,
                          from_=[*ACTIVE, *RESTARTABLE, JobState.STOPPED],
                          message=f"{job.state} -> terminated: terminated by the operator"):
            raise Conflict(f"the backup job of {name!r} changed state meanwhile: try again")
        return JobRef(job.id, job.generation, job.daemon_id or "", "terminated")
