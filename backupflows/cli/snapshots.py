"""``backupflows snapshots list|take|delete`` and ``backupflows groom plan|run``.

``--json`` keys (stable): snapshots list -> a list of
``{"id", "job", "optime": {"t", "i"}, "wall_time", "kind", "store",
"bytes_stored", "bytes_logical", "docs", "expires_at", "on_demand"}``;
snapshots policy -> ``{"deployment", "job", "job_state", "interval_hours",
"reference_hour", "reference_minute", "reference_time", "base_days",
"daily_days", "weekly_weeks", "monthly_months", "pit_window_hours", "store",
"gzip", "full_every", "full_delta_percent", "enabled", "last_scheduled",
"next_due", "due_now"}`` (times ISO 8601 UTC; ``next_due`` null when disabled);
groom plan -> ``{"dead_blocks", "dead_bytes", "live_bytes", "total_bytes",
"total_blocks", "live_ratio", "manifests", "blocks"}``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from backupflows.catalog.optime import to_json
from backupflows.catalog.snapshot_models import Snapshot
from backupflows.errors import BackupflowsError
from backupflows.storage import groom as groom_mod
from backupflows.storage import integrity, operations, service
from backupflows.storage import policy as policy_mod


def _storage() -> service.Storage:
    from backupflows.cli.deployments import require_catalog

    require_catalog()  # one line naming 'backupflows db upgrade' when not migrated
    return service.Storage.open()


def _row(r: Snapshot) -> dict[str, Any]:
    return {"id": r.id, "job": r.job_id, "optime": to_json(r.optime_ts),
            "wall_time": r.wall_time.isoformat() if r.wall_time else None,
            "kind": r.kind, "store": r.store, "bytes_stored": r.bytes_stored,
            "bytes_logical": r.bytes_logical, "docs": r.docs,
            "expires_at": r.expires_at.isoformat() if r.expires_at else None,
            "on_demand": r.on_demand}


@click.group()
def snapshots() -> None:
    """Snapshots of a deployment's backup: list, take, delete, policy."""


@snapshots.command("list")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(name: str, as_json: bool) -> None:
    """Restorable snapshots of deployment NAME, oldest first."""
    storage = _storage()
    with storage.reading() as s:
        job = service.job_for(s, name)
        rows = [_row(r) for r in service.list_snapshots(s, job.id)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'ID':>6}  {'OPTIME':<22} {'WALL TIME (UTC)':<20} {'KIND':<12} "
               f"{'STORED':>10} {'LOGICAL':>10}  EXPIRES")
    for r in rows:
        o = r["optime"]
        optime = f"{o['t']}:{o['i']}" if o else "-"
        click.echo(f"{r['id']:>6}  {optime:<22} {(r['wall_time'] or '-')[:19]:<20} "
                   f"{r['kind']:<12} {_mb(r['bytes_stored']):>10} {_mb(r['bytes_logical']):>10}"
                   f"  {(r['expires_at'] or '-')[:16]}")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@snapshots.command("take")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Wait until the snapshot is done.")
@click.option("--local", is_flag=True,
              help="Take it in this process (the head must be on this machine).")
def take_cmd(name: str, wait: bool, local: bool) -> None:
    """Take an on-demand snapshot of deployment NAME."""
    storage = _storage()
    with storage.reading() as s:
        job = service.job_for(s, name)
        job_id, daemon_id = job.id, job.daemon_id
    if local:
        sid = operations.take_for_job(storage, job_id, on_demand=True)
        click.echo(f"snapshot {sid} of {name} done")
        return
    from backupflows.tasks.snapshots import send_take

    result = send_take(job_id, daemon_id, on_demand=True)
    if not wait:
        click.echo(f"snapshot of {name} queued (task {result.id})")
        return
    while not result.ready():
        info = result.info if isinstance(result.info, dict) else {}
        if info.get("blocks_new") is not None:
            click.echo(f"\r{info['blocks_new']} blocks, {_mb(info['bytes_stored'])} stored",
                       err=True, nl=False)
        time.sleep(0.5)
    try:
        out = result.get(propagate=True)
    except Exception as exc:  # the worker's error, re-raised here: one line, exit 1
        raise BackupflowsError(f"snapshot of {name} failed: {type(exc).__name__}: {exc}"
                               ) from None
    click.echo(f"\nsnapshot {out['snapshot']} of {name}: {out['status']}", err=True)


@snapshots.command("delete")
@click.argument("snapshot_id", type=int)
def delete_cmd(snapshot_id: int) -> None:
    """Expire snapshot ID now (a groom reclaims its space)."""
    with _storage().sessions() as s:
        service.delete_snapshot(s, snapshot_id)
    click.echo(f"snapshot {snapshot_id} expired")


@snapshots.command("policy")
@click.argument("name")
@click.option("--interval-hours", type=int, help="Hours between scheduled snapshots: 6, 8, 12, 24.")
@click.option("--reference-time", metavar="HH:MM", help="UTC time of the first snapshot of a day.")
@click.option("--base-days", type=int, help="Keep every snapshot this many days (2-5).")
@click.option("--daily-days", type=int, help="Keep each day's first snapshot N days (0 off).")
@click.option("--weekly-weeks", type=int, help="Keep each week's first snapshot N weeks (0 off).")
@click.option("--monthly-months", type=int,
              help="Keep each month's first snapshot N months (0 off).")
@click.option("--pit-hours", type=int, help="Point-in-time restore window in hours.")
@click.option("--store", help="Where snapshots go: blockstore or filesystem.")
@click.option("--gzip/--no-gzip", default=None, help="Gzip filesystem-store files.")
@click.option("--full-every", type=int, help="A full (synthetic) snapshot every N snapshots.")
@click.option("--enable/--disable", "enabled", default=None,
              help="Turn scheduled snapshots on or off.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def policy_cmd(name: str, as_json: bool, reference_time: str | None, **options: Any) -> None:
    """Show the snapshot schedule and retention of NAME, or change them."""
    keys = {"pit_hours": "pit_window_hours"}
    changes = {keys.get(k, k): v for k, v in options.items() if v is not None}
    if reference_time is not None:
        changes["reference_hour"], changes["reference_minute"] = \
            policy_mod.parse_reference_time(reference_time)
    storage = _storage()
    p = (policy_mod.update(storage, name, changes) if changes
         else policy_mod.show(storage, name))
    if as_json:
        click.echo(json.dumps(p, indent=2))
        return
    if changes:
        click.echo(f"policy of {name} saved")
    click.echo(f"{name} (job {p['job']}, {p['job_state']}): "
               f"{'enabled' if p['enabled'] else 'DISABLED'}\n"
               f"  schedule:  every {p['interval_hours']} h from {p['reference_time']} UTC\n"
               f"  retention: base {p['base_days']} days, daily {_off(p['daily_days'], 'days')}, "
               f"weekly {_off(p['weekly_weeks'], 'weeks')}, "
               f"monthly {_off(p['monthly_months'], 'months')}\n"
               f"  point-in-time window: {p['pit_window_hours']} h\n"
               f"  store: {p['store']}"
               + (f" (gzip {'on' if p['gzip'] else 'off'})" if p["store"] == "filesystem"
                  else f" (full every {p['full_every']} snapshots)") + "\n"
               f"  last scheduled: {(p['last_scheduled'] or '-')[:19]}\n"
               f"  next due: {_next_due(p)}")


def _off(n: int, unit: str) -> str:
    return f"{n} {unit}" if n else "off"


def _next_due(p: dict[str, Any]) -> str:
    if p["next_due"] is None:
        return "- (scheduled snapshots disabled)"
    when = "now" if p["due_now"] else p["next_due"][:16].replace("T", " ") + " UTC"
    if p["job_state"] != "routine":
        when += f" (once the job is routine; it is {p['job_state']})"
    return when


@click.group()
def groom() -> None:
    """Reclaim blockstore space no kept snapshot needs: plan, run."""


@groom.command("plan")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plan_cmd(as_json: bool) -> None:
    """What a groom would delete now, and the live/total bytes."""
    p = groom_mod.plan(_storage())
    ratio, dead = operations.groom_trigger()
    met = p.due(ratio, dead)
    if as_json:
        out = p.to_json()
        out["trigger"] = {"min_live_ratio": ratio, "min_dead_bytes": dead, "met": met}
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"dead blocks: {len(p.dead)} ({_mb(p.dead_bytes)}); live {_mb(p.live_bytes)} "
               f"of {_mb(p.total_bytes)} ({p.live_ratio:.0%}); manifests to delete: "
               f"{len(p.manifests)}; trigger (live < {ratio:.0%} and dead > {_mb(dead)}) "
               f"{'met' if met else 'not met'}")


@groom.command("run")
def run_cmd() -> None:
    """Run a groom now."""
    storage = _storage()
    operations.remove_expired_fs(storage)
    r = groom_mod.run(storage, on_demand=True)
    click.echo(f"groom {r.groom_id}: deleted {r.blocks_deleted} blocks ({_mb(r.bytes_freed)}), "
               f"{r.manifests_deleted} manifests, {r.orphans_deleted} orphan objects")


def storage_check_cmd(name: str | None, as_json: bool) -> None:
    """``check --storage [NAME]`` (wired into the ``check`` command): exit 1 on problems."""
    result = integrity.run_storage_check(name)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo(f"checked {result.snapshots_checked} snapshots, {result.blocks_checked} "
                   f"blocks: {'OK' if result.ok else 'PROBLEMS'}")
        for p in result.problems:
            click.echo(f"  {p}")
    if not result.ok:
        raise SystemExit(1)

