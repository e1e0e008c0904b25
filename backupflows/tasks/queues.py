"""Queue names: one per kind of work, plus one per daemon (it holds heads).

Daemon work of a job goes to ``daemon_queue(job.daemon_id)`` so the head stays
on the disk of the daemon that holds it; ``backupflows worker`` consumes its
own daemon queue by default. No Celery import here: domain code may name queues.
"""

from __future__ import annotations

AGENT = "agent"
DAEMON = "daemon"
STORAGE = "storage"
RESTORE = "restore"
SHARED_QUEUES: tuple[str, ...] = (AGENT, DAEMON, STORAGE, RESTORE)


def daemon_queue(daemon_id: str) -> str:
    """The queue of the daemon ``daemon_id``: ``daemon.<daemon_id>``."""
    if not daemon_id or any(ch.isspace() or ch == "," for ch in daemon_id):
        raise ValueError(f"bad daemon id {daemon_id!r}")
    return f"{DAEMON}.{daemon_id}"


def default_worker_queues(daemon_id: str) -> list[str]:
    """What ``backupflows worker`` consumes without ``-Q``: all shared + its own."""
    return [*SHARED_QUEUES, daemon_queue(daemon_id)]
