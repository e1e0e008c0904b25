"""The S3 backend against a real S3-compatible HTTP server: moto's server
mode, started by this module as a subprocess on a free port. Without moto
the module is skipped (and fails under CI=true, where it must run)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from backupflows.errors import ConfigError, StorageError
from backupflows.storage.backends import (
    ObjectNotFound,
    RetriesExhausted,
    RetryingBackend,
    RetryPolicy,
    TransientStorageError,
    open_backend,
)
from tests.storage.backend_conformance import BackendConformance, MiB, chunked, pattern

try:
    import boto3
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip("boto3 is not installed", allow_module_level=True)

from backupflows.storage.backends.s3 import S3Backend  # noqa: E402

BUCKET = "bf-conformance"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"S3 test server required under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
            mp.delenv(var, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        yield


@pytest.fixture(scope="module")
def s3_endpoint(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        import moto.server  # noqa: F401
    except ImportError as e:
        _unavailable(f"moto server mode not installed (pip install 'moto[server]'): {e}")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _unavailable(f"moto server exited: {log.read_text(errors='replace')[-500:]}")
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    _unavailable("moto server did not answer within 30 s")


@pytest.fixture(scope="module")
def s3_client(s3_endpoint: str) -> Any:
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


def _backend(endpoint: str, prefix: str | None = None, **kw: Any) -> Any:
    return S3Backend(BUCKET, prefix if prefix is not None else f"t-{uuid.uuid4().hex}",
                     endpoint_url=endpoint, region="us-east-1",
                     multipart_threshold=5 * MiB, part_size=5 * MiB, **kw)


class TestS3Conformance(BackendConformance):
    stream_size = 12 * MiB  # three parts of 5, 5 and 2 MiB

    @pytest.fixture
    def backend(self, s3_endpoint: str, s3_client: Any) -> Iterator[Any]:
        backend = _backend(s3_endpoint)
        yield backend
        backend.close()


def test_multipart_upload_is_used_and_aborted_on_failure(s3_endpoint: str, s3_client: Any) -> None:
    backend = _backend(s3_endpoint)
    data = pattern(11 * MiB, seed=9)
    backend.put_stream("mp/ok", chunked(data, MiB))
    etag = s3_client.head_object(Bucket=BUCKET, Key=backend.prefix + "mp/ok")["ETag"]
    assert etag.strip('"').endswith("-3")  # a multipart upload of three parts

    def failing() -> Iterator[bytes]:
        yield from chunked(data, MiB)
        raise OSError("disk read failed")

    with pytest.raises(OSError, match="disk read failed"):
        backend.put_stream("mp/failed", failing())
    uploads = s3_client.list_multipart_uploads(Bucket=BUCKET, Prefix=backend.prefix)
    assert uploads.get("Uploads", []) == []
    assert [i.name for i in backend.list("mp/")] == ["mp/ok"]


def test_prefixes_isolate_backends(s3_endpoint: str, s3_client: Any) -> None:
    run = uuid.uuid4().hex
    a, ab = _backend(s3_endpoint, f"iso-{run}/a"), _backend(s3_endpoint, f"iso-{run}/ab")
    a.put("x", b"1")
    ab.put("x", b"2")
    assert [i.name for i in a.list()] == ["x"] and a.get("x") == b"1"
    assert [i.name for i in ab.list()] == ["x"] and ab.get("x") == b"2"
    root = _backend(s3_endpoint, "")
    assert {f"iso-{run}/a/x", f"iso-{run}/ab/x"} <= {i.name for i in root.list(f"iso-{run}/")}


def test_open_backend_from_url(s3_endpoint: str, s3_client: Any) -> None:
    prefix = f"url-{uuid.uuid4().hex}"
    url = f"s3://{BUCKET}/{prefix}/?endpoint_url={s3_endpoint}&region=us-east-1&part_size={5 * MiB}"
    backend = open_backend(url)
    assert isinstance(backend, RetryingBackend)
    backend.put("slices/0001", b"slice")
    assert s3_client.get_object(Bucket=BUCKET, Key=f"{prefix}/slices/0001")["Body"].read() == b"slice"
    assert backend.get("slices/0001") == b"slice"


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://key:secret@bucket/p",
                                 "s3://b/p?colour=blue", "s3://b/p?part_size=big",
                                 "s3://b/p?part_size=1024", "s3://b/a/../b"])
def test_bad_s3_urls_are_config_errors(url: str, aws_env: None) -> None:
    with pytest.raises(ConfigError):
        open_backend(url)


def test_missing_bucket_is_not_a_missing_object(s3_endpoint: str) -> None:
    backend = S3Backend(f"no-such-bucket-{uuid.uuid4().hex[:8]}", endpoint_url=s3_endpoint,
                        region="us-east-1")
    with pytest.raises(StorageError, match="NoSuchBucket") as info:
        backend.get("x")
    assert not isinstance(info.value, ObjectNotFound)


# ---- error classification through real HTTP answers ------------------------------


class _ErrorServer(ThreadingHTTPServer):
    """Answers every request with one S3 error, counting requests."""

    def __init__(self, status: int, code: str) -> None:
        self.status, self.code, self.requests = status, code, 0
        super().__init__(("127.0.0.1", 0), _ErrorHandler)
        threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ErrorHandler(BaseHTTPRequestHandler):
    server: _ErrorServer

    def _answer(self) -> None:
        self.server.requests += 1
        length = int(self.headers.get("Content-Length") or 0)
        if length and "100-continue" not in self.headers.get("Expect", ""):
            self.rfile.read(length)  # (with Expect: 100-continue the body never comes)
        body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{self.server.code}</Code>"
                f"<Message>injected {self.server.code}</Message></Error>").encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("status,code", [(503, "SlowDown"), (500, "InternalError"),
                                         (503, "ServiceUnavailable")])
def test_transient_answers_are_retried_then_given_up(status: int, code: str, aws_env: None) -> None:
    server = _ErrorServer(status, code)
    try:
        raw = S3Backend("b", endpoint_url=server.url, region="us-east-1")
        with pytest.raises(TransientStorageError, match=code):
            raw.put("x", b"1")
        assert server.requests == 1  # botocore's own retries are off
        backend = RetryingBackend(raw, FAST_RETRY)
        with pytest.raises(RetriesExhausted, match=code):
            backend.get("x")
        assert server.requests == 1 + FAST_RETRY.max_attempts
    finally:
        server.shutdown()


def test_permanent_answers_are_not_retried(aws_env: None) -> None:
    server = _ErrorServer(403, "AccessDenied")
    try:
        backend = RetryingBackend(S3Backend("b", endpoint_url=server.url, region="us-east-1"),
                                  FAST_RETRY)
        with pytest.raises(StorageError, match="AccessDenied") as info:
            backend.put("x", b"1")
        assert not isinstance(info.value, TransientStorageError | RetriesExhausted)
        assert server.requests == 1
    finally:
        server.shutdown()


def test_unreachable_endpoint_is_transient(aws_env: None) -> None:
    backend = S3Backend("b", endpoint_url=f"http://127.0.0.1:{_free_port()}", region="us-east-1",
                        timeout=2)
    with pytest.raises(TransientStorageError, match="stat"):
        backend.stat("x")
    sleeps: list[float] = []
    retrying = RetryingBackend(backend, FAST_RETRY, sleep=sleeps.append)
    with pytest.raises(RetriesExhausted):
        retrying.get("x")
    assert len(sleeps) == FAST_RETRY.max_attempts - 1
