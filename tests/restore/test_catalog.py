"""Revision 0004 (restores, download links) up and down on SQLite and
PostgreSQL, restores surviving nothing they should not; the claim protocol
(a lost worker's restore is taken over, the old runner stops); callbacks."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from backupflows.catalog import migrate
from backupflows.catalog.models import utcnow
from backupflows.catalog.restore_models import Restore
from backupflows.errors import RestoreError
from backupflows.restore import service
from tests.catalog_helpers import table_names
from tests.restore.world import World

TABLES = {"restores", "download_links"}


def _round_trip(url: str) -> None:
    assert migrate.upgrade(url, "0003") == "0003"
    assert not table_names(url) & TABLES
    assert migrate.upgrade(url, "0004") == "0004"
    assert table_names(url) >= TABLES
    assert migrate.downgrade(url, "0003") == "0003"
    assert not table_names(url) & TABLES and "snapshots" in table_names(url)
    assert migrate.upgrade(url) == migrate.head()


def test_0004_up_and_down_on_sqlite(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path}/c.db")


@pytest.mark.postgres
def test_0004_up_and_down_on_postgresql(postgres_url: str) -> None:
    _round_trip(postgres_url)


def test_a_restore_whose_worker_was_lost_is_taken_over(history: World, tmp_path: Path) -> None:
    req = service.request(history.storage, deployment=history.name, snapshot_id=1,
                          destination={"kind": "dir", "path": str(tmp_path / "d")})
    assert service.claim(history.storage, req.id, "worker-a")
    assert not service.claim(history.storage, req.id, "worker-b")  # leased to a
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".backupflows-restore").write_text(f"restore {req.id}")
    (tmp_path / "d" / "half-written.bson").write_bytes(b"x")  # a's partial output
    with history.storage.sessions() as s:
        s.execute(update(Restore).where(Restore.id == req.id)
                  .values(lease_until=utcnow() - timedelta(seconds=1)))
    out = service.run(history.storage, req.id, "worker-b")
    assert out["state"] == "done" and not (tmp_path / "d" / "half-written.bson").exists()
    stale = service.Runner(history.storage, req.id, "worker-a")
    with pytest.raises(RestoreError, match="lease lost"):
        stale.report(force=True, docs=1)
    assert service.run(history.storage, req.id, "worker-c")["state"] == "done"  # no rerun


class _Hook(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []
    fail_first = 0

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(503)
        else:
            _Hook.bodies.append(body)
            self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_callbacks_are_retried_and_bounded(history: World, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        _Hook.bodies, _Hook.fail_first = [], 2
        req = service.request(history.storage, deployment=history.name, snapshot_id=1,
                              destination={"kind": "dir", "path": str(tmp_path / "cb")},
                              callback_url=url)
        assert service.notify(history.storage, req.id, backoff=0) is None  # not finished yet
        service.run(history.storage, req.id, "w")
        assert service.notify(history.storage, req.id, backoff=0.01) == "sent"
        assert [b["id"] for b in _Hook.bodies] == [req.id]
        assert _Hook.bodies[0]["state"] == "done" and _Hook.bodies[0]["result"]["verified"]
        assert service.notify(history.storage, req.id, backoff=0) is None  # sent once
        _Hook.fail_first = 99
        req = service.request(history.storage, deployment=history.name, snapshot_id=1,
                              destination={"kind": "dir", "path": str(tmp_path / "cb2")},
                              callback_url=url)
        service.run(history.storage, req.id, "w")
        assert service.notify(history.storage, req.id, attempts=3, backoff=0.01) == "failed"
        assert _Hook.fail_first == 96  # three attempts, then it gives up
        assert service.describe(history.storage, req.id)["callback_state"] == "failed"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(RestoreError, match="callback_url"):
        service.request(history.storage, deployment=history.name, snapshot_id=1,
                        destination={"kind": "download"}, callback_url="ftp://x")
