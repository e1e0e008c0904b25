"""``backupflows serve``: the small HTTP service of restores.

Routes (``ROUTES``, a table: issue 7 adds ``/metrics`` with ``add_route``):

- ``POST /restores`` — JSON body = the keyword arguments of the Celery
  contract (``backupflows.tasks.restores``); answers ``202`` with the
  restore (``id``, ``state``...). Bad requests answer ``400``, an unknown
  deployment or snapshot ``404``, both with ``{"error": message}``.
- ``GET /restores`` — the latest restores; ``GET /restores/{id}`` — state,
  progress, result and, when a download restore is done, its link.
- ``GET /downloads/{token}`` — streams the file; ``410`` once the link
  expired or its uses are spent, ``404`` for an unknown token. The token in
  the path is the credential (no bearer needed, as a shared link).

Every route but downloads needs ``Authorization: Bearer <token>`` equal to
``BACKUPFLOWS_API_TOKEN`` (compared in constant time): ``401`` otherwise.
The service holds no Celery import: ``make_server`` receives the function
that queues a restore's run.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from backupflows.errors import BackupflowsError, ConfigError, NotFound, RestoreError
from backupflows.redact import redact_text
from backupflows.restore import download, service
from backupflows.storage.service import Storage

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20
CHUNK = 1 << 20


@dataclass
class Response:
    status: int
    body: Any = None                 # JSON-able, or None
    file: Path | None = None         # streamed instead of a body
    filename: str = ""
    after: Callable[[], None] | None = None  # runs once the response is sent
    raw: bytes | None = None         # sent as is with content_type (e.g. /metrics)
    content_type: str = "application/json"


Handler = Callable[["Context", re.Match[str]], Response]


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: bool = True


ROUTES: list[Route] = []


def add_route(method: str, pattern: str, handler: Handler, *, auth: bool = True) -> None:
    """Register a route (``pattern`` is a regex matched against the whole path)."""
    ROUTES.append(Route(method.upper(), re.compile(f"^{pattern}$"), handler, auth))


@dataclass
class Context:
    """What a handler sees: the app's state and the request."""

    storage: Storage
    enqueue: Callable[[int], Any]
    base_url: str
    body: bytes = b""

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise RestoreError(f"request body is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise RestoreError("request body must be a JSON object")
        return value


# -- handlers -----------------------------------------------------------------------------

_CONTRACT = {"deployment", "snapshot_id", "at", "destination", "selection", "callback_url",
             "request_id", "requester"}


def post_restores(ctx: Context, _: re.Match[str]) -> Response:
    body = ctx.json()
    unknown = set(body) - _CONTRACT
    if unknown:
        raise RestoreError(f"unknown field(s): {', '.join(sorted(unknown))}")
    if not isinstance(body.get("deployment"), str):
        raise RestoreError("'deployment' (a deployment name) is required")
    if "destination" not in body:
        raise RestoreError("'destination' is required")
    req = service.request(ctx.storage, **body)
    ctx.enqueue(req.id)
    out = service.describe(ctx.storage, req.id, ctx.base_url)
    return Response(HTTPStatus.ACCEPTED if req.created else HTTPStatus.OK, out)


def get_restore(ctx: Context, m: re.Match[str]) -> Response:
    return Response(HTTPStatus.OK, service.describe(ctx.storage, int(m.group(1)), ctx.base_url))


def list_restores(ctx: Context, _: re.Match[str]) -> Response:
    return Response(HTTPStatus.OK, service.list_restores(ctx.storage))


def get_download(ctx: Context, m: re.Match[str]) -> Response:
    try:
        with ctx.storage.sessions() as s:
            row = download.use_link(s, m.group(1))
            path, name, left = Path(row.path), row.filename, row.uses_left
    except download.LinkUnknown as exc:
        return Response(HTTPStatus.NOT_FOUND, {"error": str(exc)})
    except download.LinkGone as exc:
        return Response(HTTPStatus.GONE, {"error": str(exc)})
    after = (lambda: path.unlink(missing_ok=True)) if left <= 0 else None
    return Response(HTTPStatus.OK, file=path, filename=name, after=after)


add_route("POST", r"/restores", post_restores)
add_route("GET", r"/restores", list_restores)
add_route("GET", r"/restores/(\d+)", get_restore)
add_route("GET", r"/downloads/([A-Za-z0-9_-]{8,200})", get_download, auth=False)


# -- the server ---------------------------------------------------------------------------

class RestoreServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], storage: Storage, token: str,
                 enqueue: Callable[[int], Any]) -> None:
        super().__init__(address, RequestHandler)
        self.storage, self.token, self.enqueue = storage, token, enqueue

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class RequestHandler(BaseHTTPRequestHandler):
    server: RestoreServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.info("%s %s", self.address_string(), redact_text(format % args))

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._send(Response(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "body too large"}))
            return
        body = self.rfile.read(length) if length > 0 else b""
        path = self.path.split("?", 1)[0]
        matches = [(r, m) for r in ROUTES if (m := r.pattern.match(path))]
        route = next(((r, m) for r, m in matches if r.method == method), None)
        if route is None:
            status = HTTPStatus.METHOD_NOT_ALLOWED if matches else HTTPStatus.NOT_FOUND
            self._send(Response(status, {"error": status.phrase}))
            return
        if route[0].auth and not self._authorized():
            self._send(Response(HTTPStatus.UNAUTHORIZED, {"error": "missing or bad bearer token"}))
            return
        self._send(self._call(route[0], route[1], body))

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        expected = self.server.token.encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                  expected)

    def _call(self, route: Route, m: re.Match[str], body: bytes) -> Response:
        try:
            host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
            ctx = Context(self.server.storage, self.server.enqueue, f"http://{host}", body)
            return route.handler(ctx, m)
        except NotFound as exc:
            return Response(HTTPStatus.NOT_FOUND, {"error": redact_text(str(exc))})
        except (BackupflowsError, TypeError, ValueError) as exc:
            return Response(HTTPStatus.BAD_REQUEST, {"error": redact_text(str(exc))})
        except Exception as exc:  # noqa: BLE001 - one answer, never a dropped connection
            log.exception("%s %s failed", self.command, self.path)
            return Response(HTTPStatus.INTERNAL_SERVER_ERROR,
                            {"error": redact_text(f"{type(exc).__name__}: {exc}")})

    def _send(self, r: Response) -> None:
        try:
            if r.file is not None:
                self._send_file(r)
            else:
                data = r.raw if r.raw is not None else json.dumps(r.body, indent=1).encode() + b"\n"
                self.send_response(r.status)
                self.send_header("Content-Type", r.content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        finally:
            if r.after is not None:
                r.after()

    def _send_file(self, r: Response) -> None:
        assert r.file is not None
        with open(r.file, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            self.send_response(r.status)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(size))
            self.send_header("Content-Disposition", f'attachment; filename="{r.filename}"')
            self.end_headers()
            while chunk := f.read(CHUNK):
                self.wfile.write(chunk)


def api_token() -> str:
    import os

    token = os.environ.get("BACKUPFLOWS_API_TOKEN", "").strip()
    if len(token) < 16:
        raise ConfigError("BACKUPFLOWS_API_TOKEN must be set (16 characters or more) for "
                          "backupflows serve")
    return token


def make_server(storage: Storage, enqueue: Callable[[int], Any], host: str = "127.0.0.1",
                port: int = 8080, token: str | None = None) -> RestoreServer:
    """A server bound to ``host:port`` (port 0: any free port); run ``serve_forever``."""
    return RestoreServer((host, port), storage, token or api_token(), enqueue)


def sweep_forever(storage: Storage, stop: threading.Event, every: float = 60.0) -> None:
    """Delete the files of expired or used-up links until ``stop`` is set."""
    while not stop.wait(every):
        try:
            with storage.sessions() as s:
                download.remove_dead_files(s)
        except Exception:  # noqa: BLE001 - the sweeper must survive a catalog hiccup
            log.exception("download sweep failed")
