"""The ``backupflows`` command line.

Each verb group lives in its own module of this package and is loaded only
when used (``_COMMANDS``), so ``backupflows --help`` stays fast and one area's
import errors never break another's commands. Errors a user can cause end in
one line on stderr and a non-zero exit (see ``main``).
"""

from __future__ import annotations

import importlib
import sys

import click

from backupflows.errors import BackupflowsError

# verb -> ("module:attribute" of a click command or group, one-line help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("backupflows.cli.demo:demo",
             "Back up a sandbox under live writes, snapshot, restore, verify."),
    "db": ("backupflows.cli.db:db", "Catalog schema: upgrade, downgrade, current."),
    "sandbox": ("backupflows.cli.sandbox:sandbox",
                "Run a MongoDB-wire-compatible replica set member (rs0)."),
    "worker": ("backupflows.cli.celery_cmds:worker", "Start a Celery worker."),
    "beat": ("backupflows.cli.celery_cmds:beat", "Start celery beat (the dispatchers)."),
    "oplog": ("backupflows.cli.oplog:oplog", "Oplog tools: offline replay."),
    "deployments": ("backupflows.cli.deployments:deployments",
                    "Deployments backed up: add, list."),
    "jobs": ("backupflows.cli.jobs:jobs", "Backup jobs: start, stop, resync, terminate."),
    "status": ("backupflows.cli.status:status", "State, optimes and lag of backup jobs."),
    "check": ("backupflows.cli.status:check",
              "Check a backup: head vs source (--against-source) or storage (--storage)."),
    "restore": ("backupflows.cli.restore:restore",
                "Restore a snapshot or a point in time: directory, archive, download, URI."),
    "restores": ("backupflows.cli.restore:restores", "Restores: list, show."),
    "serve": ("backupflows.cli.serve:serve", "HTTP service: POST/GET /restores, downloads."),
    "snapshots": ("backupflows.cli.snapshots:snapshots",
                  "Snapshots: list, take, delete, schedule and retention."),
    "groom": ("backupflows.cli.snapshots:groom", "Blockstore grooms: plan, run."),
    "alerts": ("backupflows.cli.alerts:alerts", "Open alerts (and, with --all, closed ones)."),
    "events": ("backupflows.cli.events:events",
               "History of a job: states, syncs, snapshots, restores, grooms, alerts."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        target = _COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target[0].split(":")
        module = importlib.import_module(module_name)
        return getattr(module, attr)


    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][1]) for name in sorted(_COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backupflows")
def cli() -> None:
    """backupflows: continuous backup and restore for MongoDB, on Celery."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the command line, one-line errors."""
    try:
        cli.main(args=argv, prog_name="backupflows", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BackupflowsError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
