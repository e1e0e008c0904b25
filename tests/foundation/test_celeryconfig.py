"""Celery configuration: delivery guarantees, queues, routing by task name."""

from __future__ import annotations

from pathlib import Path

import pytest

import celeryconfig
from backupflows.settings import load_settings
from backupflows.tasks.app import create_app, settings_conf
from backupflows.tasks.queues import daemon_queue, default_worker_queues


def test_at_least_once_delivery() -> None:
    assert celeryconfig.task_acks_late is True
    assert celeryconfig.task_reject_on_worker_lost is True
    assert celeryconfig.worker_prefetch_multiplier == 1
    assert celeryconfig.task_serializer == "json" and celeryconfig.accept_content == ["json"]
    assert celeryconfig.broker_connection_retry_on_startup is True
    assert celeryconfig.timezone == "UTC"
    dispatchers = {entry["task"] for entry in celeryconfig.beat_schedule.values()}
    assert {"backupflows.jobs.dispatch_oplog_rounds", "backupflows.jobs.dispatch_apply_rounds",
            "backupflows.jobs.reconcile"} <= dispatchers


def test_flower_sees_tasks() -> None:
    assert celeryconfig.worker_send_task_events and celeryconfig.task_send_sent_event
    assert celeryconfig.task_track_started and celeryconfig.result_extended


def test_queues() -> None:
    assert [q.name for q in celeryconfig.task_queues] == ["agent", "daemon", "storage", "restore"]
    assert daemon_queue("d1") == "daemon.d1"
    assert default_worker_queues("d1") == ["agent", "daemon", "storage", "restore", "daemon.d1"]
    with pytest.raises(ValueError):
        daemon_queue("a,b")


@pytest.mark.parametrize(("task", "queue"), [
    ("backupflows.source.slice_collection", "agent"),
    ("backupflows.source.oplog_round", "agent"),
    ("backupflows.head.build", "daemon"),
    ("backupflows.oplog.apply_round", "daemon"),
    ("backupflows.storage.groom", "storage"),
    ("backupflows.restore.deliver", "restore"),
    ("backupflows.system.ping", "daemon"),
    ("something.unrouted", "daemon"),
])
def test_routing_by_task_name(task: str, queue: str, tmp_path: Path) -> None:
    app = create_app(load_settings({"BACKUPFLOWS_DATA_DIR": str(tmp_path)}))
    route = app.amqp.router.route({}, task)
    assert route["queue"].name == queue


def test_redis_settings_carry_prefix_and_visibility_timeout(tmp_path: Path) -> None:
    conf = settings_conf(load_settings({
        "BACKUPFLOWS_DATA_DIR": str(tmp_path),
        "BACKUPFLOWS_BROKER_URL": "redis://h:6379/0",
        "BACKUPFLOWS_RESULT_BACKEND": "redis://h:6379/1",
        "BACKUPFLOWS_BROKER_KEY_PREFIX": "site1:",
        "BACKUPFLOWS_VISIBILITY_TIMEOUT": "120",
    }))
    assert conf["broker_transport_options"] == {"visibility_timeout": 120,
                                                "global_keyprefix": "site1:"}
    assert conf["result_backend_transport_options"] == {"global_keyprefix": "site1:"}


def test_worker_argv_defaults_to_all_queues_and_own_daemon_queue(data_dir: Path,
                                                                  monkeypatch) -> None:
    from backupflows.cli.celery_cmds import worker_argv
    from backupflows.settings import reset_settings

    monkeypatch.setenv("BACKUPFLOWS_DAEMON_ID", "d9")
    reset_settings()
    argv = worker_argv(None, 2, "threads", None, ("--max-tasks-per-child", "5"))
    assert argv[:3] == ["worker", "-Q", "agent,daemon,storage,restore,daemon.d9"]
    assert argv[argv.index("-c") + 1] == "2" and argv[argv.index("--pool") + 1] == "threads"
    assert argv[argv.index("-n") + 1] == "d9@%h" and argv[-2:] == ["--max-tasks-per-child", "5"]
