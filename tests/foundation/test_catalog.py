"""Catalog models, optimes and the claim() pattern, on a migrated SQLite catalog."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest
from bson.timestamp import Timestamp
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from backupflows.catalog import migrate, optime
from backupflows.catalog.db import claim, session_scope
from backupflows.catalog.models import BackupJob, Deployment, Event, JobState

URI = "mongodb://backup:s3cr3t-pw@db1:27017,db2:27017/?replicaSet=rs0&authSource=admin"


@pytest.fixture
def catalog(data_dir: Path) -> str:
    from backupflows.settings import get_settings

    url = get_settings().catalog_url
    migrate.upgrade(url)
    return url


def _deployment_with_job(name: str = "prod") -> tuple[int, int]:
    with session_scope() as s:
        dep = Deployment(name=name, uri=URI, include_ns=["app"], exclude_ns=["app.tmp"])
        job = BackupJob(deployment=dep)
        s.add_all([dep, job])
        s.flush()
        return dep.id, job.id


def test_deployment_round_trip_never_shows_the_password(catalog: str) -> None:
    dep_id, job_id = _deployment_with_job()
    with session_scope(readonly=True) as s:
        dep = s.get(Deployment, dep_id)
        assert dep is not None
        assert dep.uri == URI  # stored as given: the agent needs it
        assert dep.include_ns == ["app"] and dep.exclude_ns == ["app.tmp"]
        assert "s3cr3t" not in dep.redacted_uri and "s3cr3t" not in repr(dep)
        assert dep.redacted_uri.startswith("mongodb://backup:***@db1:27017,db2:27017/")
        assert "replicaSet=rs0" in dep.redacted_uri
        assert dep.created_at.tzinfo is not None
        job = s.get(BackupJob, job_id)
        assert job is not None
        assert job.state == JobState.INITIAL_SYNC and job.auto_resync is True
        assert job.created_at.tzinfo == UTC


def test_deployment_names_are_unique(catalog: str) -> None:
    _deployment_with_job("same")
    with pytest.raises(IntegrityError):
        _deployment_with_job("same")


def test_job_optimes_are_stored_packed_and_read_as_timestamps(catalog: str) -> None:
    _, job_id = _deployment_with_job()
    with session_scope() as s:
        job = s.get(BackupJob, job_id)
        assert job is not None and job.t0 is None
        job.t0 = Timestamp(1_700_000_000, 7)
        job.head_optime = Timestamp(1_700_000_005, 1)
        job.oplog_optime = Timestamp(1_700_000_005, 2)
    with session_scope(readonly=True) as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        assert job.t0 == Timestamp(1_700_000_000, 7)
        assert job.t0_ts == (1_700_000_000 << 32) | 7
        behind = s.scalars(select(BackupJob.id).where(BackupJob.head_ts < BackupJob.oplog_ts))
        assert list(behind) == [job_id]  # SQL compares optimes in optime order


def test_optime_packing_preserves_order_and_round_trips() -> None:
    stamps = [Timestamp(0, 0), Timestamp(1, 2**32 - 1), Timestamp(2, 0), Timestamp(2**31 - 1, 5)]
    packed = [optime.pack(ts) for ts in stamps]
    assert packed == sorted(packed)
    assert [optime.unpack(p) for p in packed] == stamps
    assert optime.to_json(packed[1]) == {"t": 1, "i": 2**32 - 1}
    assert optime.to_json(None) is None
    with pytest.raises(ValueError):
        optime.pack(Timestamp(2**31, 0))  # would not fit a signed BIGINT


def test_job_state_must_be_a_known_state(catalog: str) -> None:
    _, job_id = _deployment_with_job()
    with pytest.raises(IntegrityError), session_scope() as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        job.state = "sleeping"


def test_claim_is_won_exactly_once(catalog: str) -> None:
    _, job_id = _deployment_with_job()
    with session_scope() as s:
        before = s.get(BackupJob, job_id).updated_at  # type: ignore[union-attr]
    wins = []
    for _ in range(3):  # a redelivered task tries the same claim again
        with session_scope() as s:
            wins.append(claim(s, BackupJob, job_id,
                              expected={"state": JobState.INITIAL_SYNC},
                              values={"state": JobState.BUILDING, "daemon_id": "d1"}))
    assert wins == [True, False, False]
    with session_scope() as s:
        assert claim(s, BackupJob, job_id, expected={"state": ("building", "validating"),
                                                    "daemon_id": "d1"},
                     values={"state": "validating"})
        assert not claim(s, BackupJob, job_id, expected={"daemon_id": None}, values={"error": "x"})
    with session_scope(readonly=True) as s:
        job = s.get(BackupJob, job_id)
        assert job is not None and job.state == "validating" and job.error is None
        assert job.updated_at > before


def test_foreign_keys_are_enforced_and_events_outlive_jobs(catalog: str) -> None:
    dep_id, job_id = _deployment_with_job()
    with pytest.raises(IntegrityError), session_scope() as s:
        s.add(BackupJob(deployment_id=9999))
    with session_scope() as s:
        s.add(Event(job_id=job_id, deployment_id=dep_id, kind="state",
                    message="initial sync started", data={"state": "initial_sync"}))
    with session_scope() as s:
        s.delete(s.get(Deployment, dep_id))
    with session_scope(readonly=True) as s:
        assert s.scalars(select(BackupJob)).all() == []  # jobs go with their deployment
        event = s.scalars(select(Event)).one()  # the history stays, detached
        assert (event.job_id, event.deployment_id) == (None, None)
        assert event.data == {"state": "initial_sync"}


def _child_writes(name: str) -> None:
    from backupflows.catalog import db

    assert db._engines == {}  # the parent's engine (and its connections) were dropped
    with session_scope() as s:
        s.add(Deployment(name=name, uri="mongodb://h/"))


def test_a_forked_child_opens_its_own_engine(catalog: str) -> None:
    import multiprocessing

    _deployment_with_job("parent")  # the parent's pool now holds a connection
    child = multiprocessing.get_context("fork").Process(target=_child_writes, args=("child",))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    with session_scope(readonly=True) as s:
        assert sorted(s.scalars(select(Deployment.name))) == ["child", "parent"]
