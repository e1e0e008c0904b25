"""``backupflows demo``: the whole product on the embedded default, proved.

One run, nothing to install (SQLite catalog, SQLite broker and results,
filesystem stores, all under a fresh directory of its own):

1. a sandbox replica set ``rs0`` (the MongoDB stand-in) filled with sample
   data, then kept under a live write load (inserts, updates of every kind,
   deletes, DDL);
2. a real ``backupflows worker -B`` process (every queue, beat embedded: the
   dispatchers run) and ``deployments add`` / ``jobs start``: initial sync in
   slices while the oplog is tailed, head build, validation, routine apply;
3. a snapshot of the head (``snapshots take --wait``), with the source's
   exact content recorded at that optime;
4. more writes; the source's content recorded at a point in time ``P``;
   more writes after ``P`` (which a restore to ``P`` must not contain);
5. restores, each through the worker like an operator's: the snapshot by
   id to a mongodump directory, ``P`` (snapshot rolled forward with the
   stored oplog) to a directory, and ``P`` into a second sandbox;
6. every restore compared with the recorded source: per collection, the
   document count and the content hash of the raw BSON (field order
   included); ``check --against-source`` compares the head with the source.

It prints what it proved and exits 1 on any difference. The run's directory
(catalog, heads, snapshots, restores, worker log) is kept for inspection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from backupflows.errors import BackupflowsError

CLI = [sys.executable, "-c", "from backupflows.cli import main; main()"]
DATABASES = ("shop", "ops")
KINDS = ("orders", "events", "customers")
# short rounds and leases so a small demo moves through every state in seconds
DEMO_ENV = {
    "BACKUPFLOWS_LEASE_SECONDS": "10",
    "BACKUPFLOWS_OPLOG_ROUND_SECONDS": "1",
    "BACKUPFLOWS_OPLOG_INTERVAL": "1",
    "BACKUPFLOWS_APPLY_INTERVAL": "1",
    "BACKUPFLOWS_RECONCILE_INTERVAL": "3",
    "BACKUPFLOWS_SLICE_BYTES": "1MiB",
}


class DemoFailed(BackupflowsError):
    """A step of the demo did not do what it must."""


@click.command()
@click.option("--size", "size_mb", type=click.IntRange(1, 2048), default=8, show_default=True,
              help="MB of sample data in the source before the backup starts.")
@click.option("--rate", type=click.IntRange(1, 5000), default=200, show_default=True,
              help="Writes per second of the live load.")
@click.option("--dir", "run_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Directory of this run (default: a new one under the "
                                 "data directory, demo/<UTC time>).")
@click.option("--timeout", type=click.IntRange(30, 7200), default=600, show_default=True,
              help="Seconds any one step may take.")
def demo(size_mb: int, rate: int, run_dir: Path | None, timeout: int) -> None:
    """Back up a sandbox under live writes, snapshot, restore, verify."""
    from backupflows.settings import get_settings

    if run_dir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        run_dir = get_settings().data_dir / "demo" / stamp
    run_dir = run_dir.resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise BackupflowsError(f"demo directory {run_dir} is not empty (choose another --dir)")
    run_dir.mkdir(parents=True, exist_ok=True)
    Demo(run_dir, size_mb, rate, timeout).run()


class Demo:
    def __init__(self, run_dir: Path, size_mb: int, rate: int, timeout: int) -> None:
        self.dir = run_dir
        self.size_mb, self.rate, self.timeout = size_mb, rate, timeout
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("BACKUPFLOWS_") or k.startswith("BACKUPFLOWS_LOG")}
        self.env.update(DEMO_ENV, BACKUPFLOWS_DATA_DIR=str(run_dir / "data"),
                        BACKUPFLOWS_DAEMON_ID="demo")
        self.proved: list[str] = []
        self.failed: list[str] = []
        self.started = time.monotonic()

    # -- output --------------------------------------------------------------------
    def say(self, text: str) -> None:
        click.echo(f"[{time.monotonic() - self.started:6.1f}s] {text}")

    def cli(self, *args: str, timeout: float | None = None) -> str:
        self.say("$ backupflows " + " ".join(args))
        done = subprocess.run([*CLI, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout or self.timeout)
        if done.returncode != 0:
            raise DemoFailed(f"'backupflows {' '.join(args)}' exited {done.returncode}: "
                             f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return done.stdout

    def verdict(self, ok: bool, what: str, detail: str = "") -> None:
        (self.proved if ok else self.failed).append(what)
        self.say(("OK    " if ok else "FAIL  ") + what + (f" ({detail})" if detail and not ok else ""))

    # -- the run ---------------------------------------------------------------------
    def run(self) -> None:
        import pymongo

        from backupflows.sandbox.server import SandboxServer

        self.say(f"demo directory {self.dir} (catalog, broker, heads, snapshots, restores)")
        self.cli("db", "upgrade")
        with SandboxServer(noop_interval=3600.0) as source, \
                pymongo.MongoClient(source.uri, serverSelectionTimeoutMS=10000) as client, \
                self.worker():
            self.say(f"source: sandbox replica set rs0 at {source.uri}")
            self.backup(source.uri, client)
            snapshot_id, at_snapshot = self.snapshot(client)
            point, at_point = self.writes_then_point(client)
            self.check_head()
            self.restore_snapshot(snapshot_id, at_snapshot)
            self.restore_point(point, at_point)
        self.summary()

    @contextmanager
    def worker(self) -> Iterator[subprocess.Popen[bytes]]:
        log_path = self.dir / "worker.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*CLI, "worker", "-c", "2", "-B", "-s", str(self.dir / "beat-schedule")],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                self._wait_ready(proc, log_path)
                self.say(f"worker pid {proc.pid} ready: every queue, beat embedded "
                         f"(log {log_path})")
                yield proc
            finally:
                _stop(proc)

    def _wait_ready(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if " ready." in log_path.read_text(errors="replace"):
                return
            if proc.poll() is not None:
                raise DemoFailed(f"the worker exited with {proc.returncode}; see {log_path}")
            time.sleep(0.2)
        raise DemoFailed(f"the worker was not ready within 120 s; see {log_path}")

    def backup(self, uri: str, client: Any) -> None:
        from backupflows.sandbox.sampledata import generate
        from backupflows.sandbox.writeload import WriteLoad

        report = generate(client, databases=DATABASES, collections=KINDS,
                          target_bytes=self.size_mb * 1024 * 1024, seed=1)
        self.say(f"sample data: {report}")
        self.cli("deployments", "add", "demo", "--uri", uri)
        with WriteLoad(client, self.namespaces, rate_per_s=self.rate, seed=2,
                       ddl_interval=2.0) as load:
            self.say(f"live write load: {self.rate}/s (inserts, updates, deletes, DDL)")
            self.cli("jobs", "start", "demo")
            self.wait_state("routine")
            stats = load.stats
        self.say(f"the backup reached routine under {stats.writes} writes")
        self.wait_caught_up(client)

    @property
    def namespaces(self) -> list[str]:
        return [f"{db}.{k}" for db in DATABASES for k in KINDS]

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli_quiet("status", "demo", "--json"))[0]

    def cli_quiet(self, *args: str) -> str:
        done = subprocess.run([*CLI, *args], env=self.env, capture_output=True, text=True,
                              timeout=self.timeout)
        if done.returncode != 0:
            raise DemoFailed(f"'backupflows {' '.join(args)}' exited {done.returncode}: "
                             f"{done.stderr.strip()[-2000:]}")
        return done.stdout

    def wait_state(self, state: str) -> None:
        deadline, seen = time.monotonic() + self.timeout, None
        while time.monotonic() < deadline:
            row = self.status()
            if row["state"] != seen:
                seen = row["state"]
                self.say(f"job state: {seen}")
            if seen == state:
                return
            if seen in ("failed", "terminated", "stopped"):
                break
            time.sleep(0.5)
        raise DemoFailed(f"the job did not reach {state} (state {seen}); see "
                         f"{self.dir / 'worker.log'} and 'backupflows status demo'")

    def wait_caught_up(self, client: Any, key: str = "head_ts") -> Any:
        from backupflows.source.topology import newest_optime

        newest = newest_optime(client)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            ts = self.status()[key]
            if ts and (ts["t"], ts["i"]) >= (newest.time, newest.inc):
                return newest
            time.sleep(0.3)
        raise DemoFailed(f"{key} did not reach the source's newest optime {newest}")

    def snapshot(self, client: Any) -> tuple[int, dict[str, Any]]:
        from backupflows.sandbox.sampledata import fingerprint

        recorded = fingerprint(client)  # the load is stopped and the head caught up
        self.cli("snapshots", "take", "demo", "--wait")
        rows = json.loads(self.cli_quiet("snapshots", "list", "demo", "--json"))
        if not rows:
            raise DemoFailed("'snapshots take --wait' left no snapshot")
        snap = rows[-1]
        self.say(f"snapshot {snap['id']} at optime {snap['optime']['t']}:{snap['optime']['i']}"
                 f": {snap['docs']} documents, {snap['bytes_stored'] / 1e6:.1f} MB stored of "
                 f"{snap['bytes_logical'] / 1e6:.1f} MB")
        return int(snap["id"]), recorded

    def writes_then_point(self, client: Any) -> tuple[str, dict[str, Any]]:
        from backupflows.sandbox.sampledata import fingerprint
        from backupflows.sandbox.writeload import WriteLoad
        from backupflows.source.topology import newest_optime

        with WriteLoad(client, self.namespaces, rate_per_s=self.rate, seed=3, ddl_interval=1.0):
            time.sleep(3)
        point = newest_optime(client)
        recorded = fingerprint(client)
        self.say(f"point in time P = {point.time}:{point.inc}: source content recorded")
        with WriteLoad(client, self.namespaces, rate_per_s=self.rate, seed=4, ddl_interval=1.0):
            time.sleep(2)  # after P: must not appear in a restore to P
        self.say("more writes after P (a restore to P must not contain them)")
        self.wait_caught_up(client, "oplog_ts")
        self.wait_caught_up(client, "head_ts")
        return f"{point.time}:{point.inc}", recorded

    def check_head(self) -> None:
        done = subprocess.run([*CLI, "check", "demo", "--against-source", "--json"],
                              env=self.env, capture_output=True, text=True,
                              timeout=self.timeout)
        self.say("$ backupflows check demo --against-source")
        try:
            report = json.loads(done.stdout)
        except ValueError:
            raise DemoFailed(f"check --against-source failed: {done.stderr.strip()}") from None
        colls = report.get("collections", [])
        wrong = [c["ns"] for c in colls if not c.get("equal")]
        self.verdict(bool(report.get("ok")) and bool(colls), f"the head equals the source "
                     f"({len(colls)} collections: counts and content hashes)",
                     "differ: " + ", ".join(wrong[:5]) if wrong else done.stderr.strip())

    def restore_snapshot(self, snapshot_id: int, recorded: dict[str, Any]) -> None:
        out = self.dir / f"restore-snapshot-{snapshot_id}"
        self.cli("restore", "demo", "--snapshot", str(snapshot_id), "--to-dir", str(out),
                 "--wait")
        self.compare(f"snapshot {snapshot_id} restored to a mongodump directory",
                     dump_fingerprint(out), recorded)

    def restore_point(self, point: str, recorded: dict[str, Any]) -> None:
        import pymongo

        from backupflows.sandbox.sampledata import fingerprint
        from backupflows.sandbox.server import SandboxServer

        out = self.dir / "restore-point"
        self.cli("restore", "demo", "--at", point, "--to-dir", str(out), "--wait")
        self.compare(f"point in time {point} (snapshot + stored oplog) restored to a directory",
                     dump_fingerprint(out), recorded)
        with SandboxServer(noop_interval=3600.0) as target, \
                pymongo.MongoClient(target.uri, serverSelectionTimeoutMS=10000) as tclient:
            self.cli("restore", "demo", "--at", point, "--to-uri", target.uri, "--wait")
            self.compare(f"point in time {point} restored into a second sandbox",
                         fingerprint(tclient), recorded)

    def compare(self, what: str, got: dict[str, Any], want: dict[str, Any]) -> None:
        wrong = [ns for ns in sorted(set(got) | set(want))
                 if _key(got.get(ns)) != _key(want.get(ns))]
        docs = sum(h.count for h in want.values())
        self.verdict(not wrong, f"{what}: {len(want)} collections, {docs} documents equal the "
                     "source byte for byte", "differ: " + ", ".join(wrong[:5]))

    def summary(self) -> None:
        click.echo("")
        click.echo(f"demo finished in {time.monotonic() - self.started:.0f} s; "
                   f"everything is kept in {self.dir}")
        for line in self.proved:
            click.echo(f"  proved: {line}")
        for line in self.failed:
            click.echo(f"  FAILED: {line}")
        click.echo(f"explore: export BACKUPFLOWS_DATA_DIR={self.dir / 'data'}; then "
                   "backupflows snapshots list demo, backupflows restores list, "
                   "backupflows events demo")
        if self.failed:
            raise SystemExit(1)


def _key(h: Any) -> tuple[int, str]:
    return (h.count, h.hexdigest()) if h is not None and h.count else (0, "")


def dump_fingerprint(root: Path) -> dict[str, Any]:
    """Count and content hash of every collection of a mongodump directory
    (raw documents as the restore wrote them, read with ``DumpReader``)."""
    from backupflows.contenthash import ContentHash
    from backupflows.mongodump.dumpdir import DumpReader

    out: dict[str, Any] = {}
    for ns in DumpReader(root):
        if ns.name.startswith("system.") or ns.db in ("admin", "local", "config"):
            continue
        out[ns.namespace] = ContentHash.of(ns.documents())
    return out


def _stop(proc: subprocess.Popen[bytes]) -> None:
    import signal

    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # pool children left behind, if any
    except ProcessLookupError:
        pass
