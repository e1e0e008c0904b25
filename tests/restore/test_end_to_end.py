# ruff: noqa: F811 - pytest fixtures imported from tests.jobs.conftest
"""The whole flow with real workers, on Redis + PostgreSQL and on the embedded
default: a sandbox under write load -> backup job (issue 4) -> snapshots
(issue 5) -> more writes; the source's exact data is recorded at several
optimes (the load paused, the newest oplog optime noted); point-in-time
restores to each of those optimes, into a directory, an archive and a second
sandbox, equal the recorded data document by document (raw bytes, field
order included) and index by index."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import bson
import pymongo
import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from backupflows.sandbox.sampledata import WriteLoad, generate
from tests.jobs.conftest import Stack, newest_ts, source_client, stack  # noqa: F401 - fixtures
from tests.restore.archive_spec import read_archive
from tests.restore.expect import archive_view, assert_same, read_dump_dir
from tests.restore.test_target import assert_target_equals, target_view

pytestmark = [pytest.mark.timeout(400), pytest.mark.sandbox_only]
DATABASES = ("shop", "ops")
KINDS = ("orders", "events", "customers")
RAW = CodecOptions(document_class=RawBSONDocument)
DECODE = CodecOptions(document_class=dict, tz_aware=False)
SKIP_DBS = ("admin", "local", "config")


def source_state(client: pymongo.MongoClient) -> dict[str, dict[str, Any]]:
    """The source's user namespaces exactly, as a restore must deliver them."""
    out: dict[str, dict[str, Any]] = {}
    for db_name in client.list_database_names():
        if db_name in SKIP_DBS:
            continue
        db = client.get_database(db_name, codec_options=RAW)
        for raw in db.list_collections():
            info = bson.decode(raw.raw, DECODE) if hasattr(raw, "raw") else dict(raw)
            name, options = info["name"], info.get("options", {})
            if name.startswith("system."):
                continue
            if info.get("type") == "view":
                out[f"{db_name}.{name}"] = {"type": "view", "docs": [], "indexes": [],
                                            "options": options}
                continue
            docs = [d.raw for d in db[name].find({}, sort=[("_id", 1)])]
            indexes = [bson.decode(i.raw, DECODE) if hasattr(i, "raw") else dict(i)
                       for i in db[name].list_indexes()]
            out[f"{db_name}.{name}"] = {"type": "collection", "docs": docs,
                                        "indexes": indexes, "options": options}
    return out


def _take_snapshot(stack: Stack, name: str) -> int:
    from backupflows.storage import operations
    from backupflows.storage.service import Storage

    return operations.take_for_job(Storage.open(), stack.job(name)["job"], on_demand=True)


def _wait_stored(stack: Stack, name: str, ts: Timestamp, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        o = stack.job(name)["oplog_ts"]
        if o and Timestamp(o["t"], o["i"]) >= ts:
            return
        time.sleep(0.3)
    raise AssertionError(f"oplog store of {name} did not reach {ts}")


def test_point_in_time_restores_equal_the_recorded_source(stack: Stack, source_client: Any,
                                                          make_sandbox: Any,
                                                          tmp_path: Path) -> None:
    server, client = source_client()
    generate(client, databases=DATABASES, collections=KINDS, target_bytes=1024 * 1024, seed=7)
    namespaces = [f"{db}.{k}" for db in DATABASES for k in KINDS]
    stack.worker()
    stack.cli("deployments", "add", "src", "--uri", server.uri)
    with WriteLoad(client, namespaces, rate_per_s=150, seed=3, ddl_interval=1.0):
        stack.cli("jobs", "start", "src")
        stack.wait_state("src", "routine", timeout=150)
    recorded: dict[Timestamp, dict[str, dict[str, Any]]] = {}
    stack.wait_caught_up("src", client)
    snapshots = [_take_snapshot(stack, "src")]
    for k in range(3):
        with WriteLoad(client, namespaces, rate_per_s=200, seed=20 + k, ddl_interval=0.7):
            time.sleep(1.5)
        recorded[newest_ts(client)] = source_state(client)
        if k == 0:
            stack.wait_caught_up("src", client)
            snapshots.append(_take_snapshot(stack, "src"))
    with WriteLoad(client, namespaces, rate_per_s=200, seed=30, ddl_interval=0.7):
        time.sleep(1.0)  # writes after the last recorded point are not restored
    _wait_stored(stack, "src", newest_ts(client))
    points = sorted(recorded)
    assert len(snapshots) == 2 and all(recorded[p] for p in points)
    for n, ts in enumerate(points):
        at = f"{ts.time}:{ts.inc}"
        out_dir = tmp_path / f"dir{n}"
        stack.cli("restore", "src", "--at", at, "--to-dir", str(out_dir), "--wait")
        assert_same(read_dump_dir(out_dir), recorded[ts])
        archive = tmp_path / f"a{n}.archive"
        stack.cli("restore", "src", "--at", at, "--archive", str(archive),
                  *(["--gzip"] if n % 2 else []), "--wait")
        assert_same(archive_view(read_archive(archive.read_bytes())), recorded[ts])
    target = make_sandbox()
    last = points[-1]
    stack.cli("restore", "src", "--at", f"{last.time}:{last.inc}", "--to-uri", target.uri,
              "--wait")
    with pymongo.MongoClient(target.uri) as tclient:
        assert_target_equals(target_view(tclient), recorded[last])
    rows = stack.cli_json("restores", "list")
    assert len(rows) == 2 * len(points) + 1 and {r["state"] for r in rows} == {"done"}
    assert all(r["result"]["verified"] for r in rows)
    rolled = [r["result"]["roll_forward"]["entries"] for r in rows
              if r["result"].get("roll_forward")]
    assert len(rolled) >= 4 and min(rolled) > 0  # the later points replay stored oplog
