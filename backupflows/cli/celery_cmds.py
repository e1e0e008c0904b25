"""``backupflows worker`` and ``backupflows beat``: Celery with our settings.

Any option these commands do not name is passed on to Celery unchanged
(``backupflows worker -n w1@%h --max-tasks-per-child 100``).
"""

from __future__ import annotations

import click

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}


@click.command(context_settings=_PASS_THROUGH)
@click.option("-Q", "--queues", default=None, metavar="Q1,Q2",
              help="Queues to consume (default: agent,daemon,storage,restore,daemon.<daemon id>).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
              help="Worker processes/threads (default: number of CPUs).")
@click.option("--pool", type=click.Choice(["prefork", "threads", "solo"]), default=None,
              help="Celery execution pool (default: prefork).")
@click.option("-l", "--loglevel", default=None, help="Log level (default: BACKUPFLOWS_LOG_LEVEL).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(queues: str | None, concurrency: int | None, pool: str | None,
           loglevel: str | None, celery_args: tuple[str, ...]) -> None:
    """Start a Celery worker for backupflows tasks."""
    argv = worker_argv(queues, concurrency, pool, loglevel, celery_args)
    from backupflows.tasks.app import app

    app.worker_main(argv)


def worker_argv(queues: str | None, concurrency: int | None, pool: str | None,
                loglevel: str | None, celery_args: tuple[str, ...] = ()) -> list[str]:
    """The ``celery worker`` argument list these options stand for."""
    from backupflows.settings import get_settings
    from backupflows.tasks.queues import default_worker_queues

    settings = get_settings()
    names = queues or ",".join(default_worker_queues(settings.daemon_id))
    argv = ["worker", "-Q", names, "-l", loglevel or settings.log_level,
            "-n", f"{settings.daemon_id}@%h"]
    if concurrency is not None:
        argv += ["-c", str(concurrency)]
    if pool is not None:
        argv += ["--pool", pool]
    return argv + list(celery_args)


@click.command(context_settings=_PASS_THROUGH)
@click.option("-l", "--loglevel", default=None, help="Log level (default: BACKUPFLOWS_LOG_LEVEL).")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(loglevel: str | None, celery_args: tuple[str, ...]) -> None:
    """Start celery beat: it runs the dispatchers of celeryconfig.beat_schedule."""
    from backupflows.settings import get_settings
    from backupflows.tasks.app import app

    settings = get_settings()
    settings.ensure_dirs()
    schedule = settings.data_dir / "celerybeat-schedule"
    app.start(["beat", "-s", str(schedule), "-l", loglevel or settings.log_level,
               *celery_args])
