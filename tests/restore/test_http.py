"""``backupflows serve`` routes over a real socket: POST /restores, polling
GET /restores/{id}, downloading the .tar.gz through its link, links refused
once expired or spent, requests refused without the bearer token."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupflows.restore import http, service
from tests.restore.expect import assert_same, expected_view, read_dump_dir
from tests.restore.world import World

pytestmark = pytest.mark.timeout(120)
TOKEN = "t0ken-for-the-tests-0123456789"


class Client:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: Any = None, token: str | None = TOKEN
             ) -> tuple[int, Any, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                status = resp.status
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raw, status, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        parsed = json.loads(raw) if ctype.startswith("application/json") else None
        return status, parsed, raw

    def wait(self, restore_id: int, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body, _ = self.call("GET", f"/restores/{restore_id}")
            assert status == 200, body
            if body["state"] in ("done", "failed"):
                return body
            time.sleep(0.1)
        raise AssertionError(f"restore {restore_id} not finished: {body}")


@pytest.fixture
def api(history: World) -> Iterator[Client]:
    """The server on a free port; runs restores on a thread (a worker's job)."""
    def enqueue(restore_id: int) -> None:
        threading.Thread(target=lambda: _run_quietly(history, restore_id), daemon=True).start()

    server = http.make_server(history.storage, enqueue, "127.0.0.1", 0, token=TOKEN)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield Client(server.url)
    server.shutdown()
    server.server_close()


def _run_quietly(w: World, restore_id: int) -> None:
    try:
        service.run(w.storage, restore_id, f"thread-{restore_id}")
    except Exception:  # noqa: BLE001 - recorded as failed in the catalog
        pass


def _download_request(sid: int, **dest: Any) -> dict[str, Any]:
    return {"deployment": "rs0", "snapshot_id": sid, "destination": {"kind": "download", **dest}}


def test_post_poll_download_then_the_link_is_spent(api: Client, history: World,
                                                  tmp_path: Path) -> None:
    sid, ts = next(iter(history.snapshots.items()))
    status, body, _ = api.call("POST", "/restores", _download_request(sid))
    assert status == 202 and body["state"] in ("queued", "running", "done"), body
    done = api.wait(body["id"])
    assert done["state"] == "done", done["error"]
    link = done["download"]
    assert link["url"].startswith(api.url + "/downloads/") and link["uses_left"] == 1
    status, _, raw = api.call("GET", link["url"][len(api.url):], token=None)
    assert status == 200 and raw[:2] == b"\x1f\x8b"
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        tar.extractall(tmp_path / "x", filter="data")
    assert_same(read_dump_dir(tmp_path / "x" / "dump"), expected_view(history.states[ts]))
    status, body, _ = api.call("GET", link["url"][len(api.url):], token=None)
    assert status == 410 and "used up" in body["error"]
    assert not (Path(history_data()) / "downloads" / link["file"]).exists()  # removed


def history_data() -> Path:
    from backupflows.settings import get_settings

    return get_settings().data_dir


def test_a_link_works_n_times_and_expires(api: Client, history: World) -> None:
    sid = next(iter(history.snapshots))
    _, body, _ = api.call("POST", "/restores", _download_request(sid, max_downloads=2,
                                                                 format="archive"))
    link = api.wait(body["id"])["download"]
    path = link["url"][len(api.url):]
    assert link["file"].endswith(".archive.gz")
    assert [api.call("GET", path, token=None)[0] for _ in range(3)] == [200, 200, 410]
    _, body, _ = api.call("POST", "/restores", _download_request(sid, expires_seconds=1))
    link = api.wait(body["id"])["download"]
    time.sleep(1.2)
    status, err, _ = api.call("GET", link["url"][len(api.url):], token=None)
    assert status == 410 and "expired" in err["error"]
    token = link["token"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert api.call("GET", f"/downloads/{forged}", token=None)[0] == 404
    assert api.call("GET", "/downloads/99-nothing-here", token=None)[0] == 404


def test_requests_without_the_token_are_refused(api: Client, history: World) -> None:
    sid = next(iter(history.snapshots))
    for token in (None, "wrong-token-wrong-token", TOKEN + "x"):
        assert api.call("POST", "/restores", _download_request(sid), token=token)[0] == 401
        assert api.call("GET", "/restores/1", token=token)[0] == 401
        assert api.call("GET", "/restores", token=token)[0] == 401
    with history.storage.reading() as s:
        from backupflows.catalog.restore_models import Restore

        assert s.query(Restore).count() == 0  # nothing was created


def test_bad_requests_and_idempotent_retries(api: Client, history: World) -> None:
    sid = next(iter(history.snapshots))
    status, body, _ = api.call("POST", "/restores", {"deployment": "rs0", "at": "1:0",
                                                     "destination": {"kind": "download"}})
    assert status == 400 and "not restorable" in body["error"] and "restorable:" in body["error"]
    status, body, _ = api.call("POST", "/restores", {"deployment": "nope", "snapshot_id": sid,
                                                     "destination": {"kind": "download"}})
    assert status == 404 and "nope" in body["error"]
    status, body, _ = api.call("POST", "/restores", {"deployment": "rs0", "snapshot_id": sid})
    assert status == 400 and "destination" in body["error"]
    status, body, _ = api.call("POST", "/restores", {**_download_request(sid), "colour": 1})
    assert status == 400 and "colour" in body["error"]
    status, body, _ = api.call("POST", "/restores", {**_download_request(sid),
                                                     "snapshot_id": "abc"})
    assert status == 400 and "abc" in body["error"]
    assert api.call("GET", "/restores/12345")[0] == 404
    assert api.call("DELETE", "/restores/1")[0] in (404, 405, 501)
    first = api.call("POST", "/restores", {**_download_request(sid), "request_id": "svc-1"})
    again = api.call("POST", "/restores", {**_download_request(sid), "request_id": "svc-1"})
    assert first[0] == 202 and again[0] == 200 and first[1]["id"] == again[1]["id"]
    status, rows, _ = api.call("GET", "/restores")
    assert status == 200 and [r["id"] for r in rows] == [first[1]["id"]]


def test_routes_are_a_table_open_to_extension(api: Client) -> None:
    def metrics(ctx: http.Context, _m: Any) -> http.Response:
        return http.Response(200, {"restores_total": len(service.list_restores(ctx.storage))})

    http.add_route("GET", r"/test-metrics", metrics, auth=False)
    try:
        status, body, _ = api.call("GET", "/test-metrics", token=None)
        assert status == 200 and body == {"restores_total": 0}
    finally:
        http.ROUTES.pop()


def test_serve_needs_an_api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from backupflows.errors import ConfigError

    monkeypatch.delenv("BACKUPFLOWS_API_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="BACKUPFLOWS_API_TOKEN must be set"):
        http.api_token()
    monkeypatch.setenv("BACKUPFLOWS_API_TOKEN", "short")
    with pytest.raises(ConfigError):
        http.api_token()
    monkeypatch.setenv("BACKUPFLOWS_API_TOKEN", TOKEN)
    assert http.api_token() == TOKEN
