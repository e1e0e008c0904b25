"""Celery configuration of backupflows: delivery, queues, routing, beat.

Broker and result backend URLs are not here: they come from the settings
(``BACKUPFLOWS_BROKER_URL``, ``BACKUPFLOWS_RESULT_BACKEND``) and are applied by
``backupflows.tasks.app``. Everything else that shapes how work flows is here.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from backupflows.alerts.config import alert_config
from backupflows.jobs.config import job_config
from backupflows.tasks.queues import AGENT, DAEMON, RESTORE, SHARED_QUEUES, STORAGE

_jobs = job_config()
_alerts = alert_config()

# --- at-least-once delivery: every task is idempotent and claims its work ---
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

# --- serialization: ids and plain values only ---
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# --- queues by kind of work; daemon.<id> queues are created on demand ---
task_queues = tuple(Queue(name, Exchange(name, type="direct"), routing_key=name)
                    for name in SHARED_QUEUES)
task_default_queue = DAEMON
task_default_exchange = DAEMON
task_default_routing_key = DAEMON
task_create_missing_queues = True

task_routes: tuple[Any, ...] = ([
    ("backupflows.source.*", {"queue": AGENT}),
    ("backupflows.head.*", {"queue": DAEMON}),
    ("backupflows.oplog.*", {"queue": DAEMON}),
    ("backupflows.storage.*", {"queue": STORAGE}),
    ("backupflows.restore.*", {"queue": RESTORE}),
    ("backupflows.system.*", {"queue": DAEMON}),
],)

# --- visibility for Flower and the CLI ---
task_track_started = True
worker_send_task_events = True
task_send_sent_event = True
result_extended = True
result_expires = 7 * 24 * 3600

# --- broker connection ---
broker_connection_retry_on_startup = True
broker_connection_retry = True
broker_connection_max_retries = None  # keep retrying: a broker restart is not fatal
# Redis: an unacked message is redelivered after this many seconds (a killed
# worker's task). The app sets it from BACKUPFLOWS_VISIBILITY_TIMEOUT.
broker_transport_options: dict[str, Any] = {"visibility_timeout": 3600}

# --- time and schedule ---
timezone = "UTC"
enable_utc = True


def _dispatcher(task: str, interval: int) -> dict[str, Any]:
    # a dispatcher message not run within a few intervals is dropped (the next one
    # does the same work): no pile-up while workers are down or busy
    return {"task": task, "schedule": float(interval),
            "options": {"expires": float(max(30, 10 * interval))}}


beat_schedule: dict[str, dict[str, Any]] = {
    # backup jobs (issue 4): intervals from BACKUPFLOWS_OPLOG_INTERVAL, _APPLY_INTERVAL,
    # _RECONCILE_INTERVAL (backupflows.jobs.config)
    "oplog-rounds": _dispatcher("backupflows.jobs.dispatch_oplog_rounds", _jobs.oplog_interval),
    "apply-rounds": _dispatcher("backupflows.jobs.dispatch_apply_rounds", _jobs.apply_interval),
    "reconcile": _dispatcher("backupflows.jobs.reconcile", _jobs.reconcile_interval),
    # snapshots (issue 5): which jobs are due (their schedule is in the catalog),
    # retention, grooms when garbage passes the threshold, weekly integrity check
    "snapshots": _dispatcher("backupflows.storage.dispatch_snapshots", 60),
    "expire-snapshots": _dispatcher("backupflows.storage.expire", 3600),
    "groom-check": _dispatcher("backupflows.storage.groom_check", 3600),
    "integrity-check": _dispatcher("backupflows.storage.integrity_check", 7 * 24 * 3600),
    # alerts (issue 7): daemon heartbeats, then every condition evaluated from the catalog
    # (BACKUPFLOWS_ALERT_INTERVAL, backupflows.alerts.config)
    "alerts": _dispatcher("backupflows.alerts.dispatch", _alerts.interval),
}

worker_hijack_root_logger = False
