# ruff: noqa: F811 - pytest fixtures imported from other test modules
"""Snapshots through the S3 backend against a real HTTP server (moto's server
mode, started as in test_backend_s3): full + incremental, restore-read,
integrity check, groom."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path
from typing import Any

import pytest

from backupflows.head.store import HeadStore
from backupflows.storage import groom, service
from backupflows.storage.backends import open_backend
from tests.oplog.helpers import Op, uuid
from tests.oplog.oplog_gen import generate
from tests.storage.snapshot_helpers import (  # noqa: F401
    assert_store_intact,
    catalog,
    fill,
    job,
    restored,
    small_opts,
    state_of,
)
from tests.storage.test_backend_s3 import BUCKET, aws_env, s3_client, s3_endpoint  # noqa: F401

pytestmark = pytest.mark.timeout(180)


def test_snapshots_on_s3(catalog: str, job: int, s3_endpoint: str, s3_client: Any,
                         tmp_path: Path) -> None:
    url = (f"s3://{BUCKET}/snap-{uuidlib.uuid4().hex[:8]}?endpoint_url={s3_endpoint}"
           "&region=us-east-1")
    storage = service.Storage(catalog, open_backend(url))
    oplog = generate(seed=19, n=2500)
    head = HeadStore(tmp_path / "h.db")
    fill(head, oplog[:1500])
    op, ui = Op(1_800_000_000), uuid(77)
    fill(head, [op.c("s3", {"create": "c"}, ui=ui)]
         + [op.i("s3.c", {"_id": i, "v": i}, ui=ui) for i in range(500)])
    first = service.take(storage, job, head, opts=small_opts())
    expected_first = state_of(head)
    fill(head, [op.u("s3.c", i, {"$v": 2, "diff": {"u": {"v": -i}}}, ui=ui)
                for i in range(1, 500, 50)] + [op.d("s3.c", 3, ui=ui)])
    second = service.take(storage, job, head, opts=small_opts())
    layers = service.open_snapshot(storage, second).collection("s3", "c").layers
    assert [la.kind for la in layers] == ["full", "delta"] and layers[1].tombstones == 1
    assert restored(storage, second) == state_of(head)
    assert restored(storage, first) == expected_first
    with storage.sessions() as s:
        service.delete_snapshot(s, first)
    groom.run(storage)
    assert restored(storage, second) == state_of(head)
    assert_store_intact(storage)
    head.close()


def test_store_url_setting_puts_snapshots_slices_and_segments_on_s3(
        catalog: str, job: int, s3_endpoint: str, s3_client: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``BACKUPFLOWS_STORE_URL=s3://...`` is what an operator sets (compose does):
    the blockstore and the object store of slices and oplog segments both use it,
    and nothing is written to the local store directory."""
    from backupflows.jobs import resources
    from backupflows.settings import get_settings, reset_settings

    prefix = f"env-{uuidlib.uuid4().hex[:8]}"
    monkeypatch.setenv("BACKUPFLOWS_STORE_DIR", str(tmp_path / "local-store"))
    monkeypatch.setenv("BACKUPFLOWS_STORE_URL",
                       f"s3://{BUCKET}/{prefix}?endpoint_url={s3_endpoint}&region=us-east-1")
    reset_settings()
    resources.reset()
    try:
        assert get_settings().store_url.startswith("s3://")
        storage = service.Storage.open(catalog)
        head = HeadStore(tmp_path / "h.db")
        op, ui = Op(1_800_000_000), uuid(78)
        fill(head, [op.c("env", {"create": "c"}, ui=ui)]
             + [op.i("env.c", {"_id": i, "v": i}, ui=ui) for i in range(300)])
        sid = service.take(storage, job, head, opts=small_opts())
        assert restored(storage, sid) == state_of(head)
        resources.object_store().put("slices/probe", b"x")
        keys = [o["Key"] for o in s3_client.list_objects_v2(
            Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])]
        assert any(k.endswith("slices/probe") for k in keys)
        assert len(keys) > 2  # blocks and manifests too
        assert not (tmp_path / "local-store").exists() or not any(
            (tmp_path / "local-store").iterdir())
        head.close()
    finally:
        monkeypatch.delenv("BACKUPFLOWS_STORE_URL")
        reset_settings()
        resources.reset()
