"""Logs never contain a password or token; JSON mode is one object per line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupflows.logging import configure_logging
from backupflows.redact import redact_text, redact_uri

SECRETS = ("hunter2", "s3cr3t", "tok-abcdef123456", "AKIAXSECRETXKEY")


@pytest.fixture
def log_stream(data_dir: Path) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging(level="DEBUG", stream=stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def _emit_secrets() -> None:
    log = logging.getLogger("backupflows.test")
    log.info("connecting to %s", "mongodb://backup:hunter2@db1:27017/?replicaSet=rs0")
    log.warning("broker redis://:s3cr3t@redis:6379/0 unreachable, token=tok-abcdef123456")
    log.info("S3 store", extra={"job": 7, "url": "s3://AKIA:AKIAXSECRETXKEY@minio/bucket"})
    try:
        raise RuntimeError("auth failed for mongodb+srv://u:hunter2@cluster.example.net/")
    except RuntimeError:
        log.exception("source error")


def test_text_logs_redact_passwords_and_tokens(log_stream: io.StringIO) -> None:
    _emit_secrets()
    out = log_stream.getvalue()
    for secret in SECRETS[:3]:
        assert secret not in out
    assert "mongodb://backup:***@db1:27017" in out and "token=***" in out
    assert "Traceback" in out and "mongodb+srv://u:***@cluster" in out


def test_json_logs_are_one_object_per_line_and_redacted(data_dir: Path) -> None:
    stream = io.StringIO()
    handler = configure_logging(level="INFO", json_lines=True, stream=stream)
    try:
        _emit_secrets()
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    for secret in SECRETS:
        assert secret not in out
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 4
    assert records[0]["level"] == "INFO" and records[0]["logger"] == "backupflows.test"
    assert records[0]["message"].startswith("connecting to mongodb://backup:***@")
    assert records[2]["job"] == 7 and records[2]["url"] == "s3://AKIA:***@minio/bucket"
    assert "RuntimeError" in records[3]["exc"]


def test_log_json_setting_selects_json(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from backupflows.settings import reset_settings

    monkeypatch.setenv("BACKUPFLOWS_LOG_JSON", "1")
    reset_settings()
    stream = io.StringIO()
    handler = configure_logging(stream=stream)
    try:
        logging.getLogger("x").warning("hello")
    finally:
        logging.getLogger().removeHandler(handler)
    assert json.loads(stream.getvalue())["message"] == "hello"


@pytest.mark.parametrize(("uri", "expected"), [
    ("mongodb://u:p%40ss@h1,h2/db?replicaSet=rs0", "mongodb://u:***@h1,h2/db?replicaSet=rs0"),
    ("mongodb://h1/?authMechanismProperties=AWS_SESSION_TOKEN:xyz",
     "mongodb://h1/?authMechanismProperties=***"),
    ("mongodb://h/?tls=true&tlsCertificateKeyFilePassword=pw",
     "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=***"),
    ("mongodb://user@h/", "mongodb://user@h/"),
    ("redis://:pw@r:6379/0", "redis://:***@r:6379/0"),
    ("postgresql+psycopg://a:b@db/x", "postgresql+psycopg://a:***@db/x"),
])
def test_redact_uri(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected


def test_redact_text_bearer_and_json_style() -> None:
    text = 'Authorization: Bearer abcdefghijklmnop {"password": "pw123", "api_key": "k-999"}'
    out = redact_text(text)
    assert "abcdefghijklmnop" not in out and "pw123" not in out and "k-999" not in out
