"""Restores in the catalog: request one, run it, list and show them.

``request`` validates everything a caller can get wrong (deployment,
snapshot or point — a point outside the window is refused here with the
restorable ranges —, destination, selection) and records a ``queued`` row;
with a ``request_id`` a retried request returns the same restore.

``run`` claims a queued restore with a conditional UPDATE (``running`` with
a lease renewed while it works), resolves its source again, pins the
snapshot, delivers the selected items to the destination through the
verifying streams (``destination.deliver``), then records ``done`` with
where the result is, or ``failed`` with the reason (nothing half-done is
ever marked done). A restore whose worker died (lease lapsed) is claimed
again and starts over. Progress goes to the catalog (and to ``on_progress``,
which the Celery task forwards to Flower).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from backupflows.catalog.models import utcnow
from backupflows.catalog.restore_models import DESTINATION_KINDS, Restore, RestoreState
from backupflows.errors import BackupflowsError, NotFound, RestoreError
from backupflows.redact import redact_text, redact_uri
from backupflows.restore import download, plan, rollforward, source
from backupflows.restore.archive import ArchiveDestination
from backupflows.restore.destination import Delivered, Destination, Progress, deliver
from backupflows.restore.dir import DirDestination
from backupflows.restore.select import Selection
from backupflows.restore.target import TargetDestination
from backupflows.source.namespaces import NamespaceFilter
from backupflows.storage import service as snapshots
from backupflows.storage.service import Storage

log = logging.getLogger(__name__)

LEASE_SECONDS = 300
RENEW_SECONDS = 2.0
PIN_SECONDS = 3600
_DEST_KEYS = {"dir": {"path", "gzip"}, "archive": {"path", "gzip"},
              "download": {"format", "expires_seconds", "max_downloads"},
              "uri": {"uri", "drop", "workers"}}


# -- requests -----------------------------------------------------------------------------

def check_destination(value: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(kind, params)`` of a destination dict, or ``RestoreError``."""
    if not isinstance(value, dict):
        raise RestoreError("destination must be an object with a 'kind'")
    params = dict(value)
    kind = params.pop("kind", None)
    if kind not in DESTINATION_KINDS:
        raise RestoreError(f"destination kind must be one of {', '.join(DESTINATION_KINDS)}, "
                           f"got {kind!r}")
    unknown = set(params) - _DEST_KEYS[kind]
    if unknown:
        raise RestoreError(f"unknown {kind} destination key(s): {', '.join(sorted(unknown))}")
    if kind in ("dir", "archive"):
        if not isinstance(params.get("path"), str) or not params["path"]:
            raise RestoreError(f"a {kind} destination needs a 'path'")
        params["path"] = os.path.abspath(params["path"])
    if kind == "uri":
        uri = params.get("uri")
        if not isinstance(uri, str) or not uri.startswith(("mongodb://", "mongodb+srv://")):
            raise RestoreError("a uri destination needs a 'uri' (mongodb://...)")
    for key in ("expires_seconds", "max_downloads", "workers"):
        if key in params and (not isinstance(params[key], int) or params[key] <= 0):
            raise RestoreError(f"destination {key!r} must be a positive whole number")
    if kind == "download" and params.get("format", "dir") not in ("dir", "archive"):
        raise RestoreError("download format must be 'dir' or 'archive'")
    return kind, params


@dataclass
class Requested:
    id: int
    created: bool


def request(storage: Storage, *, deployment: str, snapshot_id: int | None = None,
            at: str | None = None, destination: dict[str, Any],
            selection: dict[str, Any] | None = None, callback_url: str | None = None,
            request_id: str | None = None, requester: str | None = None) -> Requested:
    """Record a queued restore (see the module docstring)."""
    if request_id is not None:
        existing = _by_request_id(storage, request_id)
        if existing is not None:
            return Requested(existing, False)
    if (snapshot_id is None) == (at is None):
        raise RestoreError("give exactly one of a snapshot id or a point in time (at)")
    kind, params = check_destination(destination)
    sel = Selection.from_json(selection)
    if callback_url is not None and not callback_url.startswith(("http://", "https://")):
        raise RestoreError(f"callback_url must be an http(s) URL, got {callback_url!r}")
    with storage.sessions() as s:
        if snapshot_id is not None:
            src = source.resolve_snapshot(s, deployment, int(snapshot_id))
            point = None
        else:
            point = source.parse_point(str(at))
            src = source.resolve_point(s, deployment, point)
        row = Restore(request_id=request_id, deployment_id=src.deployment_id,
                      deployment_name=src.deployment, job_id=src.job_id,
                      snapshot_id=None if point is not None else src.snapshot_id,
                      point_ts=point, destination_kind=kind, destination=params,
                      selection=sel.to_json(), callback_url=callback_url,
                      requester=requester, result={})
        s.add(row)
        s.flush()
        return Requested(row.id, True)


def _by_request_id(storage: Storage, request_id: str) -> int | None:
    with storage.reading() as s:
        return s.execute(select(Restore.id).where(Restore.request_id == request_id)).scalar()


def set_task_id(storage: Storage, restore_id: int, task_id: str) -> None:
    with storage.sessions() as s:
        s.execute(update(Restore).where(Restore.id == restore_id).values(task_id=task_id))


# -- reading ------------------------------------------------------------------------------

def get(session: Session, restore_id: int) -> Restore:
    row = session.get(Restore, restore_id)
    if row is None:
        raise NotFound(f"no restore {restore_id}")
    return row


def describe(storage: Storage, restore_id: int, base_url: str | None = None) -> dict[str, Any]:
    """The restore as JSON, with its download link when it is done."""
    with storage.reading() as s:
        row = get(s, restore_id)
        out = row.to_json()
        if row.destination_kind == "download" and row.state == RestoreState.DONE:
            link = download.link_of(s, row.id)
            out["download"] = link.to_json(base_url) if link is not None else None
    return out


def list_restores(storage: Storage, deployment: str | None = None, limit: int = 100
                  ) -> list[dict[str, Any]]:
    with storage.reading() as s:
        q = select(Restore).order_by(Restore.id.desc()).limit(limit)
        if deployment is not None:
            q = q.where(Restore.deployment_name == deployment)
        return [r.to_json() for r in s.execute(q).scalars()]


# -- running ------------------------------------------------------------------------------

OnProgress = Callable[[dict[str, Any]], None]


def claim(storage: Storage, restore_id: int, owner: str) -> bool:
    """queued (or running with a lapsed lease) -> running, for ``owner``."""
    now = utcnow()
    with storage.sessions() as s:
        return s.execute(update(Restore).where(
            Restore.id == restore_id,
            or_(Restore.state == RestoreState.QUEUED,
                (Restore.state == RestoreState.RUNNING) & (Restore.lease_until < now)),
        ).values(state=RestoreState.RUNNING, lease_owner=owner, started_at=now, error=None,
                 lease_until=now + timedelta(seconds=LEASE_SECONDS), step="starting",
                 docs=0, nbytes=0, collections_done=0)).rowcount == 1


class Runner:
    """One claimed restore being executed by ``owner``."""

    def __init__(self, storage: Storage, restore_id: int, owner: str,
                 on_progress: OnProgress | None = None) -> None:
        self.storage, self.id, self.owner = storage, restore_id, owner
        self.on_progress = on_progress
        self._last = 0.0
        self._pinned = 0.0
        self.step = "starting"
        self.snapshot_id: int | None = None

    def report(self, force: bool = False, **values: Any) -> None:
        """Write progress (throttled) and renew the lease; RestoreError if lost."""
        now = time.monotonic()
        if not force and now - self._last < RENEW_SECONDS:
            return
        self._last = now
        with self.storage.sessions() as s:
            hit = s.execute(update(Restore).where(
                Restore.id == self.id, Restore.lease_owner == self.owner,
                Restore.state == RestoreState.RUNNING,
            ).values(lease_until=utcnow() + timedelta(seconds=LEASE_SECONDS), step=self.step,
                     **values)).rowcount
        if not hit:
            raise RestoreError(f"restore {self.id}: lease lost (taken over or cancelled)")
        if self.snapshot_id is not None and now - self._pinned >= 60:
            self._pinned = now
            snapshots.pin(self.storage, self.snapshot_id, PIN_SECONDS)
        if self.on_progress is not None:
            self.on_progress({"restore": self.id, "step": self.step, **values})

    def progress(self, p: Progress) -> None:
        self.report(docs=p.docs, nbytes=p.nbytes, collections_done=p.collections_done,
                    collections_total=p.collections_total)


def run(storage: Storage, restore_id: int, owner: str, *,
        on_progress: OnProgress | None = None, workdir: Path | None = None) -> dict[str, Any]:
    """Execute restore ``restore_id`` (see the module docstring); its JSON.
    A restore that is not claimable (done, failed, running elsewhere) is
    returned as it is."""
    if not claim(storage, restore_id, owner):
        return describe(storage, restore_id)
    runner = Runner(storage, restore_id, owner, on_progress)
    started = time.monotonic()
    try:
        result = _execute(storage, runner, workdir)
    except BaseException as exc:
        _finish(storage, runner, RestoreState.FAILED, error=_reason(exc))
        raise
    result["seconds"] = round(time.monotonic() - started, 3)
    _finish(storage, runner, RestoreState.DONE, result=result)
    return describe(storage, restore_id)


def _reason(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, BackupflowsError) else f"{type(exc).__name__}: {exc}"
    return redact_text(text)[:4000]


def _finish(storage: Storage, runner: Runner, state: str, *, error: str | None = None,
            result: dict[str, Any] | None = None) -> None:
    with storage.sessions() as s:
        row = s.get(Restore, runner.id)
        if row is None or row.lease_owner != runner.owner:
            return
        dest = row.destination
        if isinstance(dest.get("uri"), str):  # the password is not needed any more
            dest = {**dest, "uri": redact_uri(dest["uri"])}
        values: dict[str, Any] = {"state": state, "finished_at": utcnow(), "lease_owner": None,
                                  "lease_until": None, "error": error, "destination": dest,
                                  "step": state}
        if result is not None:
            values["result"] = result
        s.execute(update(Restore).where(Restore.id == runner.id,
                                        Restore.lease_owner == runner.owner).values(**values))


def _execute(storage: Storage, runner: Runner, workdir: Path | None) -> dict[str, Any]:
    with storage.reading() as s:
        row = get(s, runner.id)
        kind, params = row.destination_kind, dict(row.destination)
        sel = Selection.from_json(row.selection)
        src = _resolve(s, row)
        dep = snapshots.job_for(s, row.deployment_name).deployment
        filt = NamespaceFilter(dep.include_ns, dep.exclude_ns)
    runner.snapshot_id = src.snapshot_id
    if not snapshots.pin(storage, src.snapshot_id, PIN_SECONDS):
        raise RestoreError(f"snapshot {src.snapshot_id} is no longer restorable")
    runner.step = "reading"
    runner.report(force=True, snapshot_id=src.snapshot_id)
    dest = _destination(kind, params, runner.id)
    info: dict[str, Any] = {"source": {"snapshot": src.snapshot_id, "store": src.store,
                                       "snapshot_optime": source.format_point(src.snapshot_ts),
                                       "point": (source.format_point(src.point)
                                                 if src.point is not None else None)}}
    if src.store == "filesystem":
        delivered = _deliver(runner, _fs_items(src, sel), dest)
    elif src.rolls_forward:
        m = snapshots.open_snapshot(storage, src.snapshot_id)
        delivered = _deliver_pit(storage, runner, m, src, sel, filt, dest, workdir, info)
    else:
        m = snapshots.open_snapshot(storage, src.snapshot_id)
        items = plan.plan(plan.from_manifest(storage.blocks, m), sel)
        delivered = _deliver(runner, items, dest)
    result = {**info, **delivered.result, "collections": delivered.verified,
              "docs": sum(v["count"] for v in delivered.verified.values()), "verified": True}
    if kind == "download":
        _link(storage, runner.id, Path(_download_path(delivered.result)), params)
    return result


def _fs_items(src: source.Source, sel: Selection) -> list[plan.Item]:
    """Items of a filesystem-store snapshot (its directory and sidecar)."""
    from backupflows.mongodump import DumpReader
    from backupflows.mongodump.errors import DumpFormatError
    from backupflows.storage import fsstore
    from backupflows.storage.operations import fs_root

    root = fs_root()
    info = fsstore.read_info(root, src.deployment, src.snapshot_id)
    try:
        reader = DumpReader(fsstore.snapshot_dir(root, src.deployment, src.snapshot_id))
    except DumpFormatError as exc:
        raise RestoreError(f"filesystem snapshot {src.snapshot_id}: {exc}") from None
    return plan.plan_dump(reader, info.get("collections", {}), sel)


def _resolve(s: Session, row: Restore) -> source.Source:
    if row.point_ts is not None:
        return source.resolve_point(s, row.deployment_name, int(row.point_ts))
    if row.snapshot_id is None:
        raise RestoreError(f"restore {row.id}: its snapshot was deleted")
    return source.resolve_snapshot(s, row.deployment_name, row.snapshot_id)


def _deliver(runner: Runner, items: list[plan.Item], dest: Destination) -> Delivered:
    runner.step = "delivering"
    progress = Progress(on_change=runner.progress)
    delivered = deliver(items, dest, progress)
    runner.step = "verified"
    runner.report(force=True, docs=progress.docs, nbytes=progress.nbytes,
                  collections_done=progress.collections_done,
                  collections_total=progress.collections_total)
    return delivered


def _deliver_pit(storage: Storage, runner: Runner, m: Any, src: source.Source, sel: Selection,
                 filt: NamespaceFilter, dest: Destination, workdir: Path | None,
                 info: dict[str, Any]) -> Delivered:
    tmp = Path(tempfile.mkdtemp(prefix=f"restore-{runner.id}-", dir=_workdir(workdir)))

    def report(step: str, counts: dict[str, int]) -> None:
        if step == "apply":
            runner.step = f"rolling forward {counts.get('entries', 0)}"[:32]
            runner.report()
        else:
            runner.step = "loading snapshot"
            runner.report(docs=counts.get("docs", 0))

    try:
        head, stats, spaces = rollforward.roll_forward(tmp / "pit.head", storage.blocks,
                                                       storage.backend, m, src, sel, filt,
                                                       report=report)
        info["roll_forward"] = {"loaded": stats.loaded, "sparse_collections": stats.sparse,
                                "entries": stats.entries,
                                "entries_per_second": round(stats.rate, 1),
                                "seconds_load": round(stats.seconds_load, 3),
                                "seconds_apply": round(stats.seconds_apply, 3)}
        try:
            return _deliver(runner, plan.plan(spaces, sel), dest)
        finally:
            head.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _workdir(workdir: Path | None) -> Path:
    if workdir is None:
        from backupflows.settings import get_settings

        workdir = get_settings().data_dir / "tmp"
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def _destination(kind: str, params: dict[str, Any], restore_id: int) -> Destination:
    if kind == "dir":
        return DirDestination(params["path"], gzip=bool(params.get("gzip")),
                              owner=f"restore {restore_id}")
    if kind == "archive":
        return ArchiveDestination(params["path"], gzip=bool(params.get("gzip")))
    if kind == "download":
        return download.download_destination(restore_id, params.get("format", "dir"))
    return TargetDestination(params["uri"], drop=bool(params.get("drop")),
                             workers=int(params.get("workers", 4)))


def _download_path(result: dict[str, Any]) -> str:
    return str(download.downloads_dir() / result.get("file", Path(result.get("path", "")).name))


def _link(storage: Storage, restore_id: int, path: Path, params: dict[str, Any]) -> None:
    with storage.sessions() as s:
        download.create_link(s, restore_id, path, ttl=params.get("expires_seconds"),
                             uses=params.get("max_downloads"))


# -- callbacks ----------------------------------------------------------------------------

CALLBACK_ATTEMPTS = 4
CALLBACK_TIMEOUT = 10.0


def notify(storage: Storage, restore_id: int, base_url: str | None = None,
           attempts: int = CALLBACK_ATTEMPTS, backoff: float = 1.0) -> str | None:
    """POST the finished restore's JSON to its callback URL, retried with a
    doubling backoff (``attempts`` tries); records and returns ``sent`` or
    ``failed`` (None without a callback or before the restore finished).
    Sent at most once per restore (the state is the claim)."""
    body = describe(storage, restore_id, base_url)
    url = body.get("callback_url")
    if not url or body["state"] not in (RestoreState.DONE, RestoreState.FAILED) \
            or body.get("callback_state") == "sent":
        return None
    error = ""
    for attempt in range(attempts):
        error = _post(url, body)
        if not error:
            break
        if attempt + 1 < attempts:
            time.sleep(backoff * (2 ** attempt))
    state = "failed" if error else "sent"
    if error:
        log.warning("restore %s: callback to %s failed: %s", restore_id, redact_text(url), error)
    with storage.sessions() as s:
        s.execute(update(Restore).where(Restore.id == restore_id).values(callback_state=state))
    return state


def _post(url: str, body: dict[str, Any]) -> str:
    """'' when the POST got a 2xx answer, else what went wrong."""
    import json
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": "backupflows"})
    try:
        with urllib.request.urlopen(req, timeout=CALLBACK_TIMEOUT) as resp:  # noqa: S310
            return "" if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return redact_text(str(getattr(exc, "reason", exc)))
