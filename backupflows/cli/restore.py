"""``backupflows restore NAME ...`` and ``backupflows restores list|show``.

``--json`` keys (stable) of ``restores list`` (a list) and ``restores show``
(one object): ``id, request_id, deployment, job, snapshot, point {t, i},
state (queued|running|done|failed), destination {kind, path|uri (password
masked)|format, gzip, drop}, selection {include, exclude, ns_from, ns_to,
include_users}, progress {step, docs, bytes, collections_done,
collections_total}, result {source, path|file|uri, collections {ns: {source,
type, count, hash}}, docs, verified, roll_forward {entries,
entries_per_second, ...}, seconds}, error, callback_url, callback_state,
requester, task_id, created_at, started_at, finished_at`` and, for a done
download restore, ``download {url, token, expires_at, uses_left, max_uses,
file, size}``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from backupflows.errors import BackupflowsError, RestoreError
from backupflows.restore import service
from backupflows.storage.service import Storage

WAIT_POLL = 0.5


def _storage() -> Storage:
    """The configured storage, once the catalog is known to be migrated
    (otherwise one line naming the fix)."""
    from backupflows.catalog import migrate

    migrate.require_current()
    return Storage.open()


def _base_url() -> str:
    return os.environ.get("BACKUPFLOWS_PUBLIC_URL") or "http://127.0.0.1:8080"


def _destination(to_dir: str | None, archive: str | None, gzip: bool, as_download: bool,
                 to_uri: str | None, drop: bool, fmt: str, expires: int | None,
                 max_downloads: int | None) -> dict[str, Any]:
    chosen = [x for x in (to_dir, archive, to_uri) if x] + ([True] if as_download else [])
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --to-dir, --archive, --download, --to-uri")
    if drop and not to_uri:
        raise click.UsageError("--drop only applies to --to-uri")
    if gzip and not (to_dir or archive):
        raise click.UsageError("--gzip applies to --to-dir and --archive")
    if to_dir:
        return {"kind": "dir", "path": to_dir, "gzip": gzip}
    if archive:
        return {"kind": "archive", "path": archive, "gzip": gzip}
    if to_uri:
        return {"kind": "uri", "uri": to_uri, "drop": drop}
    dest: dict[str, Any] = {"kind": "download", "format": fmt}
    if expires:
        dest["expires_seconds"] = expires
    if max_downloads:
        dest["max_downloads"] = max_downloads
    return dest


@click.command("restore")
@click.argument("name")
@click.option("--snapshot", "snapshot_id", type=int, help="Restore this snapshot.")
@click.option("--at", "at", help="Point in time: ISO-8601 UTC date or optime SECONDS[:INC].")
@click.option("--to-dir", type=click.Path(), help="Write a mongodump directory here.")
@click.option("--archive", type=click.Path(), help="Write a mongodump archive file.")
@click.option("--gzip", is_flag=True, help="Compress (archive, or the directory's files).")
@click.option("--download", "as_download", is_flag=True,
              help="Make a .tar.gz behind a download link (backupflows serve).")
@click.option("--download-format", "fmt", type=click.Choice(["dir", "archive"]), default="dir",
              show_default=True, help="Download a tarred directory or a gzipped archive.")
@click.option("--expires", type=int, help="Download link lifetime in seconds (default 3600).")
@click.option("--max-downloads", type=int, help="Times the link works (default 1).")
@click.option("--to-uri", help="Restore into this MongoDB (password never shown).")
@click.option("--drop", is_flag=True, help="With --to-uri: replace existing collections.")
@click.option("--ns-include", multiple=True, help="db, db.coll or wildcard (repeatable).")
@click.option("--ns-exclude", multiple=True, help="db, db.coll or wildcard (repeatable).")
@click.option("--ns-from", multiple=True, help="Rename from (pairs with --ns-to).")
@click.option("--ns-to", multiple=True, help="Rename to (pairs with --ns-from).")
@click.option("--include-users", is_flag=True, help="Also restore admin.system.users/roles.")
@click.option("--wait", is_flag=True, help="Wait for the result, with a progress bar.")
@click.option("--local", is_flag=True, help="Run the restore in this process (no worker).")
@click.option("--request-id", help="Idempotency key: the same key returns the same restore.")
@click.option("--json", "as_json", is_flag=True, help="Print the restore as JSON at the end.")
def restore(name: str, snapshot_id: int | None, at: str | None, to_dir: str | None,
            archive: str | None, gzip: bool, as_download: bool, fmt: str, expires: int | None,
            max_downloads: int | None, to_uri: str | None, drop: bool,
            ns_include: tuple[str, ...], ns_exclude: tuple[str, ...], ns_from: tuple[str, ...],
            ns_to: tuple[str, ...], include_users: bool, wait: bool, local: bool,
            request_id: str | None, as_json: bool) -> None:
    """Restore deployment NAME from a snapshot or to a point in time."""
    if (snapshot_id is None) == (at is None):
        raise click.UsageError("give exactly one of --snapshot ID or --at POINT")
    dest = _destination(to_dir, archive, gzip, as_download, to_uri, drop, fmt, expires,
                        max_downloads)
    selection = {"include": list(ns_include), "exclude": list(ns_exclude),
                 "ns_from": list(ns_from), "ns_to": list(ns_to), "include_users": include_users}
    storage = _storage()
    req = service.request(storage, deployment=name, snapshot_id=snapshot_id, at=at,
                          destination=dest, selection=selection, request_id=request_id,
                          requester=f"cli:{os.environ.get('USER', '?')}")
    if local:
        out = _run_local(storage, req.id)
    else:
        from backupflows.tasks.restores import enqueue

        enqueue(storage, req.id)
        if not wait:
            click.echo(f"restore {req.id} of {name} queued", err=not as_json)
            if as_json:
                click.echo(json.dumps(service.describe(storage, req.id, _base_url()), indent=2))
            return
        out = _wait(storage, req.id)
    _report(out, as_json)


def _run_local(storage: Storage, restore_id: int) -> dict[str, Any]:
    bar = Bar()
    try:
        service.run(storage, restore_id, f"cli:{os.getpid()}", on_progress=bar.show_meta)
    except BackupflowsError:
        pass  # recorded as failed: reported below
    bar.close()
    return service.describe(storage, restore_id, _base_url())


def _wait(storage: Storage, restore_id: int) -> dict[str, Any]:
    bar = Bar()
    while True:
        out = service.describe(storage, restore_id, _base_url())
        bar.show(out["state"], out["progress"])
        if out["state"] in ("done", "failed"):
            bar.close()
            return out
        time.sleep(WAIT_POLL)


class Bar:
    """A one-line progress bar on stderr."""

    WIDTH = 24

    def __init__(self) -> None:
        self.shown = False

    def show_meta(self, meta: dict[str, Any]) -> None:
        self.show("running", {"step": meta.get("step"), "docs": meta.get("docs", 0),
                              "bytes": meta.get("nbytes", 0),
                              "collections_done": meta.get("collections_done", 0),
                              "collections_total": meta.get("collections_total", 0)})

    def show(self, state: str, p: dict[str, Any]) -> None:
        total, done = p.get("collections_total") or 0, p.get("collections_done") or 0
        filled = int(self.WIDTH * done / total) if total else 0
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        line = (f"\r[{bar}] {done}/{total} collections, {p.get('docs') or 0:,} docs, "
                f"{(p.get('bytes') or 0) / 1e6:,.1f} MB  {p.get('step') or state:<16}")
        click.echo(line, err=True, nl=False)
        self.shown = True

    def close(self) -> None:
        if self.shown:
            click.echo("", err=True)


def _report(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(out, indent=2))
    if out["state"] == "failed":
        raise RestoreError(f"restore {out['id']} failed: {out['error']}")
    if as_json:
        return
    r = out["result"]
    where = r.get("path") or r.get("uri") or r.get("file")
    rf = r.get("roll_forward")
    extra = (f", rolled forward {rf['entries']:,} oplog entries "
             f"({rf['entries_per_second']:,.0f}/s)") if rf else ""
    click.echo(f"restore {out['id']} done: {r.get('docs', 0):,} documents in "
               f"{len(r.get('collections', {}))} collections verified (counts and content "
               f"hashes){extra}; {where}")
    if out.get("download"):
        d = out["download"]
        click.echo(f"download: {d['url']} (expires {d['expires_at']}, {d['uses_left']} use(s))")


# -- restores list|show --------------------------------------------------------------------

@click.group("restores")
def restores() -> None:
    """Restores: list, show."""


@restores.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(name: str | None, as_json: bool) -> None:
    """Latest restores (of deployment NAME), newest first."""
    rows = service.list_restores(_storage(), name)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'ID':>5}  {'DEPLOYMENT':<16} {'STATE':<8} {'KIND':<9} {'SOURCE':<24} "
               f"{'DOCS':>10}  CREATED")
    for r in rows:
        src = f"snapshot {r['snapshot']}" if r["point"] is None else \
            f"at {r['point']['t']}:{r['point']['i']}"
        click.echo(f"{r['id']:>5}  {r['deployment']:<16} {r['state']:<8} "
                   f"{r['destination']['kind']:<9} {src:<24} {r['progress']['docs']:>10,}  "
                   f"{(r['created_at'] or '')[:19]}")


@restores.command("show")
@click.argument("restore_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_cmd(restore_id: int, as_json: bool) -> None:
    """One restore: source, destination, state, progress, result."""
    out = service.describe(_storage(), restore_id, _base_url())
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    p = out["progress"]
    click.echo(f"restore {out['id']} of {out['deployment']}: {out['state']}")
    click.echo(f"  destination: {json.dumps(out['destination'])}")
    click.echo("  source: " + (f"snapshot {out['snapshot']}" if out["point"] is None
                                else f"point {out['point']['t']}:{out['point']['i']}"))
    click.echo(f"  progress: {p['collections_done']}/{p['collections_total']} collections, "
               f"{p['docs']:,} docs, {p['bytes'] / 1e6:,.1f} MB ({p['step']})")
    if out["error"]:
        click.echo(f"  error: {out['error']}")
    if out.get("download"):
        click.echo(f"  download: {out['download']['url']}")
