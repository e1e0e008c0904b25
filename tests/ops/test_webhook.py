"""Alert notifications POSTed to a local HTTP receiver: retried after a 500
within a pass, kept for the next pass when the receiver stays down, 'closed'
after 'opened', nothing sent twice, the webhook path never logged."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import update

from backupflows.alerts import service, webhook
from backupflows.alerts.config import AlertConfig
from backupflows.catalog.db import session_scope
from backupflows.catalog.models import BackupJob, utcnow
from backupflows.catalog.ops_models import Alert

SECRET_PATH = "/hooks/T0KEN-in-the-path-123456"


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[int] = []  # answers to give, then 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.bodies.append({"status": status, "path": self.path, **body})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[tuple[str, int]]:
        return [(b["event"], b["alert"]["id"]) for b in self.bodies if b["status"] == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def _fail_job(job_id: int, state: str = "failed") -> None:
    with session_scope() as s:
        s.execute(update(BackupJob).where(BackupJob.id == job_id)
                  .values(state=state, error="source unreachable", last_round_at=utcnow()))


def test_opened_then_closed_delivered_with_a_retry_after_500(
        catalog: int, receiver: Receiver) -> None:
    cfg = AlertConfig(webhook_url=receiver.url, webhook_tries=3)
    _fail_job(catalog)
    opened = service.evaluate(cfg=cfg).opened[0]
    receiver.statuses = [500]
    sent = webhook.deliver(cfg, backoff=0.01)
    assert (sent.sent, sent.failed) == (1, 0)
    assert [b["status"] for b in receiver.bodies] == [500, 200]  # the same POST, retried
    body = receiver.bodies[-1]
    assert body["path"] == SECRET_PATH and body["event"] == "opened"
    assert body["alert"]["kind"] == "job_failed" and body["alert"]["deployment"] == "prod"
    assert body["alert"]["message"] == "prod: job failed: source unreachable"
    assert webhook.deliver(cfg, backoff=0.01).sent == 0  # nothing twice
    _fail_job(catalog, state="stopped")
    assert service.evaluate(cfg=cfg).closed[0]["id"] == opened["id"]
    assert webhook.deliver(cfg, backoff=0.01).sent == 1
    assert receiver.delivered() == [("opened", opened["id"]), ("closed", opened["id"])]
    with session_scope(readonly=True) as s:
        row = s.get(Alert, opened["id"])
        assert row is not None and row.open_sent_at and row.close_sent_at
        assert row.delivery_attempts == 0


def test_receiver_down_then_back_delivers_in_order(
        catalog: int, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    cfg = AlertConfig(webhook_url=receiver.url, webhook_tries=2)
    _fail_job(catalog)
    alert_id = service.evaluate(cfg=cfg).opened[0]["id"]
    _fail_job(catalog, state="stopped")
    service.evaluate(cfg=cfg)  # opened and closed before any delivery
    receiver.statuses = [503, 503]
    with caplog.at_level(logging.WARNING, logger="backupflows.alerts"):
        result = webhook.deliver(cfg, backoff=0.01)
    assert (result.sent, result.failed) == (0, 1)  # 'closed' waits for 'opened'
    assert any("webhook http://127.0.0.1" in r.getMessage() and "HTTP 503" in r.getMessage()
               for r in caplog.records)
    assert not any(SECRET_PATH in r.getMessage() for r in caplog.records)
    with session_scope(readonly=True) as s:
        row = s.get(Alert, alert_id)
        assert row is not None and row.delivery_attempts == 1
        assert row.delivery_error == "HTTP 503"
    assert webhook.deliver(cfg, backoff=0.01).sent == 2  # next pass: receiver is back
    assert receiver.delivered() == [("opened", alert_id), ("closed", alert_id)]


def test_unreachable_webhook_gives_up_after_max_attempts(catalog: int) -> None:
    cfg = AlertConfig(webhook_url="http://127.0.0.1:9/x", webhook_tries=1,
                      webhook_max_attempts=2)
    _fail_job(catalog)
    service.evaluate(cfg=cfg)
    assert webhook.deliver(cfg, backoff=0.01).failed == 1
    assert webhook.deliver(cfg, backoff=0.01).failed == 1
    assert webhook.deliver(cfg, backoff=0.01).failed == 0  # gave up: 2 attempts
    with session_scope(readonly=True) as s:
        row = s.query(Alert).one()
        assert row.delivery_attempts == 2 and "refused" in (row.delivery_error or "").lower()


def test_old_history_is_not_replayed_to_a_new_webhook(catalog: int,
                                                      receiver: Receiver) -> None:
    _fail_job(catalog)
    service.evaluate(cfg=AlertConfig())
    _fail_job(catalog, state="stopped")
    service.evaluate(cfg=AlertConfig())
    with session_scope() as s:
        s.execute(update(Alert).values(closed_at=utcnow() - timedelta(days=2)))
    assert webhook.deliver(AlertConfig(webhook_url=receiver.url)).sent == 0
    assert receiver.bodies == []


def test_no_webhook_configured_sends_nothing(catalog: int) -> None:
    _fail_job(catalog)
    service.evaluate(cfg=AlertConfig())
    assert webhook.deliver(AlertConfig()) == webhook.Delivery(0, 0)
