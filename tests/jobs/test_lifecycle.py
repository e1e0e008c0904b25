"""The job state machine, leases and dispatchers on a migrated SQLite catalog
(no workers): every transition is one conditional UPDATE with its event,
conflicting requests are refused, leases are exclusive until they expire,
and dispatchers never queue the same work twice while it is reserved."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bson.timestamp import Timestamp

from backupflows.catalog import migrate, optime
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, Event, JobState
from backupflows.errors import ConfigError, Conflict, NotFound
from backupflows.jobs import dispatch, service
from backupflows.jobs.config import job_config
from backupflows.jobs.lifecycle import (
    ACTIVE,
    HEAD,
    OPLOG,
    release_job_lease,
    renew_job_lease,
    require_resync,
    take_job_lease,
    transition,
)


@pytest.fixture
def catalog(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUPFLOWS_LEASE_SECONDS", "1")
    job_config.cache_clear()
    migrate.upgrade()
    service.add_deployment("prod", "mongodb://u:pw@h1:27017,h2:27017/?replicaSet=rs0",
                           ["app"], ["app.tmp"])
    yield
    job_config.cache_clear()


def _job() -> BackupJob:
    with session_scope(readonly=True) as s:
        job = s.query(BackupJob).order_by(BackupJob.id.desc()).first()
        assert job is not None
        return job


def _kinds(job_id: int) -> list[str]:
    with session_scope(readonly=True) as s:
        return [e.kind for e in s.query(Event).filter(Event.job_id == job_id).order_by(Event.id)]


def test_deployments_validate_and_never_show_the_password(catalog: None) -> None:
    rows = service.list_deployments()
    assert rows[0]["uri"] == "mongodb://u:***@h1:27017,h2:27017/?replicaSet=rs0"
    assert rows[0]["include"] == ["app"] and rows[0]["exclude"] == ["app.tmp"]
    with pytest.raises(Conflict, match="already exists"):
        service.add_deployment("prod", "mongodb://h/", [], [])
    for bad in ("", "x y", "-x"):
        with pytest.raises(ConfigError, match="bad deployment name"):
            service.add_deployment(bad, "mongodb://h/", [], [])
    with pytest.raises(NotFound, match="deployments add"):
        service.start_job("nope", "d1")


def test_job_lifecycle_through_the_operator_commands(catalog: None) -> None:
    first = service.start_job("prod", "d1")
    assert (first.action, first.generation, first.daemon_id) == ("started", 1, "d1")
    with pytest.raises(Conflict, match="already running"):
        service.start_job("prod", "d1")
    assert service.stop_job("prod").action == "stopped"
    with pytest.raises(Conflict, match="already stopped"):
        service.stop_job("prod")
    again = service.start_job("prod", "d2")  # stopped before its head was built: resync
    assert (again.action, again.generation, again.daemon_id) == ("restarted", 2, "d1")
    job = _job()
    assert job.state == JobState.INITIAL_SYNC and job.t0_ts is None and job.error is None
    assert service.resync_job("prod").generation == 3
    assert service.terminate_job("prod").action == "terminated"
    with pytest.raises(Conflict, match="terminated"):
        service.resync_job("prod")
    fresh = service.start_job("prod", "d3")  # a new job row after a terminated one
    assert fresh.job_id != first.job_id and fresh.generation == 1
    kinds = _kinds(first.job_id)
    assert kinds.count("sync.started") == 3 and kinds[-1] == "job.state"


def test_a_stopped_routine_job_resumes_routine(catalog: None) -> None:
    ref = service.start_job("prod", "d1")
    with session_scope() as s:
        for to, from_ in (("building", "initial_sync"), ("validating", "building"),
                          ("routine", "validating")):
            assert transition(s, ref.job_id, to, from_=[from_], generation=1, message=to)
        job = s.get(BackupJob, ref.job_id)
        assert job is not None
        job.synced_at, job.head_ts = job.updated_at, optime.pack(Timestamp(100, 1))
    service.stop_job("prod")
    assert service.start_job("prod", "d1").action == "resumed"
    assert _job().state == "routine" and _job().generation == 1


def test_transitions_are_claims(catalog: None) -> None:
    ref = service.start_job("prod", "d1")
    with session_scope() as s:
        assert transition(s, ref.job_id, "building", from_=["initial_sync"], generation=1,
                          message="m")
        # the same transition again, or one of another generation, does not hit
        assert not transition(s, ref.job_id, "building", from_=["initial_sync"], message="m")
        assert not transition(s, ref.job_id, "validating", from_=["building"], generation=2,
                              message="m")
    with session_scope() as s:
        moved, new = require_resync(s, ref.job_id, 1, "oplog gap: test")
    assert moved and new == 2
    with session_scope() as s:
        assert require_resync(s, ref.job_id, 1, "late duplicate") == (False, None)
    kinds = _kinds(ref.job_id)
    assert kinds.count("job.resync_required") == 1 and kinds[-1] == "job.state"


def test_leases_are_exclusive_until_they_expire(catalog: None) -> None:
    ref = service.start_job("prod", "d1")
    with session_scope() as s:
        assert take_job_lease(s, ref.job_id, OPLOG, "a", 1, states=ACTIVE)
        assert not take_job_lease(s, ref.job_id, OPLOG, "b", 1, states=ACTIVE)
        assert take_job_lease(s, ref.job_id, HEAD, "b", 1, states=ACTIVE)  # another kind
        assert renew_job_lease(s, ref.job_id, OPLOG, "a", 1, states=ACTIVE, generation=1)
        assert not renew_job_lease(s, ref.job_id, OPLOG, "b", 1, states=ACTIVE, generation=1)
        assert not renew_job_lease(s, ref.job_id, OPLOG, "a", 1, states=ACTIVE, generation=2)
    time.sleep(1.1)
    with session_scope() as s:
        assert take_job_lease(s, ref.job_id, OPLOG, "c", 5, states=ACTIVE)  # a expired
        release_job_lease(s, ref.job_id, OPLOG, "a")  # not a's any more: no effect
        assert not take_job_lease(s, ref.job_id, OPLOG, "d", 5, states=ACTIVE)
        assert take_job_lease(s, ref.job_id, OPLOG, "e", 5, states=ACTIVE, token="c")
        assert not take_job_lease(s, ref.job_id, HEAD, "f", 5, states=["routine"])


def test_dispatchers_reserve_what_they_queue(catalog: None) -> None:
    ref = service.start_job("prod", "d1")
    assert dispatch.due_oplog_rounds() == []  # no T0 yet: nothing to tail
    with session_scope() as s:
        job = s.get(BackupJob, ref.job_id)
        assert job is not None
        job.t0_ts = job.oplog_ts = optime.pack(Timestamp(100, 1))
    first = dispatch.due_oplog_rounds()
    assert [(w.kind, w.job_id) for w in first] == [("oplog_round", ref.job_id)]
    assert first[0].token and dispatch.due_oplog_rounds() == []  # reserved
    assert dispatch.due_apply_rounds() == []  # not routine
    with session_scope() as s:
        assert take_job_lease(s, ref.job_id, OPLOG, "round", 5, states=ACTIVE,
                              token=first[0].token)  # the queued round takes over
        job = s.get(BackupJob, ref.job_id)
        assert job is not None
        job.state, job.head_ts = "routine", optime.pack(Timestamp(100, 1))
        job.oplog_ts = optime.pack(Timestamp(101, 1))
    applies = dispatch.due_apply_rounds()
    assert [(w.kind, w.daemon_id) for w in applies] == [("apply_round", "d1")]
    assert dispatch.due_apply_rounds() == []


def test_a_round_takes_over_a_reservation_but_never_a_running_round(catalog: None) -> None:
    # beat reserved the oplog lease for the round it queued; the round queued
    # by the previous round runs first and does the work instead of
    # answering "busy" and leaving it to a message that waits in the queue
    ref = service.start_job("prod", "d1")
    with session_scope() as s:
        job = s.get(BackupJob, ref.job_id)
        assert job is not None
        job.t0_ts = job.oplog_ts = optime.pack(Timestamp(100, 1))
    [reserved] = dispatch.due_oplog_rounds()
    with session_scope() as s:
        assert not take_job_lease(s, ref.job_id, OPLOG, "plain", 5, states=ACTIVE)
        assert take_job_lease(s, ref.job_id, OPLOG, "chained", 5, states=ACTIVE,
                              take_reserved=True)
        # the running round is not a reservation: neither the reserved message
        # nor another chained round can take it
        assert not take_job_lease(s, ref.job_id, OPLOG, "queued", 5, states=ACTIVE,
                                  token=reserved.token, take_reserved=True)
        assert not take_job_lease(s, ref.job_id, OPLOG, "again", 5, states=ACTIVE,
                                  take_reserved=True)
        release_job_lease(s, ref.job_id, OPLOG, "chained")
        assert take_job_lease(s, ref.job_id, OPLOG, "queued", 5, states=ACTIVE,
                              token=reserved.token)  # later: a round like any other
    assert dispatch.due_oplog_rounds() == []  # held by a running round


def test_reconcile_requeues_a_start_that_never_ran(catalog: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ref = service.start_job("prod", "d1")
    assert [w.kind for w in dispatch.reconcile()] == []  # too recent to be lost
    monkeypatch.setenv("BACKUPFLOWS_REQUEUE_SECONDS", "1")
    job_config.cache_clear()
    time.sleep(1.1)
    work = dispatch.reconcile()
    assert [(w.kind, w.job_id, w.generation) for w in work] == [("start", ref.job_id, 1)]
    assert dispatch.reconcile() == []  # touched: not again before REQUEUE_SECONDS
