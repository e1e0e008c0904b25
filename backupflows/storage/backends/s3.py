"""Object store in an S3 bucket (AWS S3 or any S3-compatible server: MinIO,
Ceph RGW, moto, ...), through boto3.

Objects are keys ``<prefix><name>`` in ``bucket``. S3 makes every PUT and
every completed multipart upload atomic, so readers never see a partial
object; ``put_stream`` switches to a multipart upload when the stream grows
past ``multipart_threshold`` and aborts the upload if the stream fails.

botocore's own retries are turned off: retrying is the job of
``RetryingBackend`` (one policy for every backend). This backend only
classifies errors: connection errors, timeouts, 5xx, ``SlowDown`` and
throttling become ``TransientStorageError``; a missing key ``ObjectNotFound``;
anything else a ``StorageError`` that names the operation and the key.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from backupflows.errors import ConfigError, StorageError
from backupflows.storage.backends.base import (
    Backend,
    CheckedChunks,
    ChunkReader,
    ObjectInfo,
    ObjectNotFound,
    TransientStorageError,
    _Bytes,
)

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
DEFAULT_PART_SIZE = 16 * 1024 * 1024
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
              "RequestLimitExceeded", "TooManyRequestsException", "InternalError",
              "ServiceUnavailable", "503", "500", "502", "504"}


class S3Backend(Backend):
    """Named objects as keys under ``prefix`` in an S3 ``bucket``.

    Credentials come from boto3's standard chain (``AWS_ACCESS_KEY_ID``/
    ``AWS_SECRET_ACCESS_KEY`` variables, shared config files, instance roles).
    ``endpoint_url`` points at a non-AWS server (path-style addressing is
    then used, as MinIO and most others expect).
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, multipart_threshold: int = DEFAULT_PART_SIZE,
                 part_size: int = DEFAULT_PART_SIZE, client: Any = None,
                 timeout: float = 60.0) -> None:
        if not bucket:
            raise ConfigError("S3 backend: bucket name is empty")
        if part_size < MIN_PART_SIZE:
            raise ConfigError(f"S3 backend: part_size must be at least {MIN_PART_SIZE} bytes")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.multipart_threshold = max(multipart_threshold, 0)
        self.part_size = part_size
        self.url = f"s3://{bucket}/{self.prefix}"
        self._client = client or _make_client(endpoint_url, region, timeout)

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            close()

    def _key(self, name: str) -> str:
        return self.prefix + name

    @contextmanager
    def _errors(self, op: str, name: str = "") -> Iterator[None]:
        """Translate botocore errors into the backupflows error tree."""
        try:
            yield
        except StorageError:
            raise
        except Exception as e:
            raise translate_error(e, op, self._key(name), self.url, name) from e

    # ---- writes ---------------------------------------------------------------

    def _put(self, name: str, data: _Bytes) -> None:
        with self._errors("put", name):
            self._client.put_object(Bucket=self.bucket, Key=self._key(name), Body=bytes(data))

    def _put_stream(self, name: str, chunks: CheckedChunks) -> None:
        buffer = bytearray()
        stream = iter(chunks)
        for chunk in stream:
            buffer += chunk
            if len(buffer) > self.multipart_threshold and len(buffer) >= self.part_size:
                self._put_multipart(name, buffer, stream)
                return
        self._put(name, buffer)

    def _put_multipart(self, name: str, buffer: bytearray, chunks: Iterator[_Bytes]) -> None:
        key = self._key(name)
        with self._errors("put (start multipart upload)", name):
            upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            parts = self._upload_parts(name, upload_id, buffer, chunks)
            with self._errors("put (complete multipart upload)", name):
                self._client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts})
        except BaseException:
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            raise

    def _upload_parts(self, name: str, upload_id: str, buffer: bytearray,
                      chunks: Iterator[_Bytes]) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []

        def upload(data: bytes | bytearray) -> None:
            number = len(parts) + 1
            with self._errors(f"put (part {number})", name):
                answer = self._client.upload_part(
                    Bucket=self.bucket, Key=self._key(name), UploadId=upload_id,
                    PartNumber=number, Body=bytes(data))
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})

        while True:
            while len(buffer) >= self.part_size:
                upload(buffer[:self.part_size])
                del buffer[:self.part_size]
            chunk = next(chunks, None)
            if chunk is None:
                break
            buffer += chunk
        if buffer or not parts:
            upload(buffer)
        return parts

    def _delete(self, name: str) -> None:
        with self._errors("delete", name):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(name))

    # ---- reads ----------------------------------------------------------------

    def _get(self, name: str) -> bytes:
        with self._errors("get", name):
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]
            try:
                return body.read()
            finally:
                body.close()

    def _get_range(self, name: str, offset: int, length: int) -> bytes:
        if length == 0:
            self._stat(name)  # still ObjectNotFound for a missing object
            return b""
        rng = f"bytes={offset}-{offset + length - 1}"
        with self._errors("get range", name):
            try:
                answer = self._client.get_object(Bucket=self.bucket, Key=self._key(name), Range=rng)
            except Exception as e:
                if _error_code(e) in ("InvalidRange", "416"):
                    return b""  # the object exists; the range starts at or past its end
                raise
            body = answer["Body"]
            try:
                return body.read()
            finally:
                body.close()

    def _open_read(self, name: str) -> BinaryIO:
        with self._errors("open", name):
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"]

        def read(n: int | None) -> bytes:
            with self._errors("read", name):
                return body.read(n)

        return io.BufferedReader(ChunkReader(read, body.close), buffer_size=1024 * 1024)  # type: ignore[return-value]

    def _stat(self, name: str) -> ObjectInfo:
        with self._errors("stat", name):
            answer = self._client.head_object(Bucket=self.bucket, Key=self._key(name))
        return ObjectInfo(name, int(answer["ContentLength"]), answer["LastModified"].timestamp())

    def _list(self, prefix: str, start_after: str | None) -> Iterator[ObjectInfo]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        if start_after is not None:
            args["StartAfter"] = self.prefix + start_after
        cut = len(self.prefix)
        with self._errors("list", prefix):
            for page in self._client.get_paginator("list_objects_v2").paginate(**args):
                for item in page.get("Contents", ()):
                    yield ObjectInfo(item["Key"][cut:], int(item["Size"]),
                                     item["LastModified"].timestamp())


def _make_client(endpoint_url: str | None, region: str | None, timeout: float) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},  # RetryingBackend retries
        connect_timeout=timeout, read_timeout=timeout, max_pool_connections=32,
        s3={"addressing_style": "path" if endpoint_url else "auto"},
        signature_version="s3v4",
    )
    try:
        return boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config)
    except Exception as e:
        raise ConfigError(f"cannot set up the S3 client: {e}") from e


def _error_code(e: BaseException) -> str:
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return ""
    code = str(response.get("Error", {}).get("Code", ""))
    return code or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


def _status(e: BaseException) -> int:
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return 0
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def translate_error(e: Exception, op: str, key: str, url: str, name: str) -> StorageError:
    """The backupflows error for a botocore/boto3 exception."""
    from botocore import exceptions as bx

    where = f"S3 {op} of {key!r} in {url}"
    if isinstance(e, bx.ClientError):
        code, status = _error_code(e), _status(e)
        if code in _NOT_FOUND or (status == 404 and code not in ("NoSuchBucket",)):
            return ObjectNotFound(name or key, url)
        message = e.response.get("Error", {}).get("Message", "")
        text = f"{where}: {code} {message}".rstrip()
        if code in _TRANSIENT or status >= 500 or status == 429:
            return TransientStorageError(text)
        return StorageError(text)
    if isinstance(e, bx.NoCredentialsError | bx.PartialCredentialsError):
        return StorageError(f"{where}: no AWS credentials (set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or configure a profile)")
    if isinstance(e, bx.ConnectionError | bx.HTTPClientError | bx.IncompleteReadError
                  | ConnectionError | TimeoutError):
        return TransientStorageError(f"{where}: {e}")
    return StorageError(f"{where}: {type(e).__name__}: {e}")
