"""The embedded broker's delivery rules, through kombu (no worker)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection

from backupflows.tasks import sqlite_broker

sqlite_broker.register()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path}/broker.db"


def _connect(url: str, visibility_timeout: float = 3600) -> Connection:
    return Connection(url, transport_options={"visibility_timeout": visibility_timeout})


def _rows(url: str) -> list[tuple[str, float | None]]:
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return db.execute("SELECT queue, taken_at FROM bf_messages ORDER BY id").fetchall()


def test_ack_deletes_the_message(broker: str) -> None:
    with _connect(broker) as conn:
        queue = conn.SimpleQueue("q1")
        queue.put({"n": 1})
        message = queue.get(timeout=2)
        assert message.payload == {"n": 1}
        assert _rows(broker)[0][1] is not None  # taken, not gone
        message.ack()
        assert _rows(broker) == []
        queue.close()


def test_taken_message_is_invisible_until_the_visibility_timeout(broker: str) -> None:
    with _connect(broker, visibility_timeout=1) as producer:
        producer.SimpleQueue("q1").put({"n": 1})
    crashed = _connect(broker, visibility_timeout=1)
    taken = crashed.SimpleQueue("q1").get(timeout=2)
    assert taken.payload == {"n": 1}
    # the taker "dies": never acks, never closes (that would requeue at once)
    with _connect(broker, visibility_timeout=1) as other:
        queue = other.SimpleQueue("q1")
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.3)
        time.sleep(1.0)
        again = queue.get(timeout=2)
        assert again.payload == {"n": 1} and again.delivery_info is not None
        assert again.properties.get("delivery_tag") == taken.delivery_tag
        again.ack()
    assert _rows(broker) == []


def test_reject_with_requeue_is_visible_at_once(broker: str) -> None:
    with _connect(broker) as conn:
        queue = conn.SimpleQueue("q1")
        queue.put({"n": 1})
        queue.get(timeout=2).requeue()
        again = queue.get(timeout=2)
        assert again.payload == {"n": 1}
        again.reject()  # without requeue: dropped
        assert _rows(broker) == []
        queue.close()


def test_fifo_per_queue_and_queues_are_separate(broker: str) -> None:
    with _connect(broker) as conn:
        a, b = conn.SimpleQueue("a"), conn.SimpleQueue("b")
        for n in range(3):
            a.put({"n": n})
        b.put({"n": "b"})
        assert [a.get(timeout=2).payload["n"] for _ in range(3)] == [0, 1, 2]
        assert b.get(timeout=2).payload == {"n": "b"}
        assert a.qsize() == 0 and b.qsize() == 0
        a.close()
        b.close()


def test_a_clean_close_returns_unacked_messages(broker: str) -> None:
    conn = _connect(broker)
    queue = conn.SimpleQueue("q1")
    queue.put({"n": 1})
    queue.get(timeout=2)
    queue.close()
    conn.close()
    assert _rows(broker) == [("q1", None)]
