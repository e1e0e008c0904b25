"""Benchmark: a backup job's initial sync and routine lag, with real workers.

Run:  .venv/bin/python bench/bench_sync.py [--mb 220] [--rate 2000] [--load-seconds 60]
                                           [--redis] [--concurrency 2]

1. A sandbox in its own process (``backupflows sandbox``) filled with
   ``--mb`` MB of sample data (two databases x six collections).
2. ``find``: a plain pymongo ``find()`` of every collection (raw documents),
   the time the source needs to hand everything over: the reference.
3. ``initial sync``: ``jobs start`` until the job is ``routine``, with one
   ``backupflows worker -c N -B`` (embedded broker and SQLite catalog by
   default, ``--redis`` for the local Redis + a PostgreSQL catalog of its
   own); the phases from the event history (slicing, build + catch-up,
   validation). Target: <= 1.3x the find.
4. ``routine lag``: a ``WriteLoad`` at ``--rate`` writes/s for
   ``--load-seconds``; every 0.25 s a marker write records (wall time, optime)
   and a poller notes when the head's optime reaches it. Target: < 5 s.
5. Peak RSS (VmHWM) of every worker process (main, pool, beat), sampled
   throughout. Target: < 300 MB each.
6. CPU accounting (``/proc/<pid>/stat``, every 0.1 s): CPU seconds of the
   sandbox, the worker's main process, beat and each pool process, the bench
   with its CLI commands, and the rest of the machine (``other``: another
   session's load shows here and makes the wall times meaningless), for the
   whole sync and per phase (CLI ``jobs start``, slicing + preload, build,
   validation); the find's CPU (sandbox + client); ``cpu_series`` in the
   JSON: each process's share of a core every 0.1 s of the sync. The lag
   section lists its five worst markers (wall time, UTC) to find in
   ``worker.log`` (``--keep``: the work directory stays, logs at INFO).

Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from bson.timestamp import Timestamp

from backupflows.sandbox.sampledata import WriteLoad, generate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
CLI = [sys.executable, "-c", "from backupflows.cli import main; main()"]
RAW = CodecOptions(document_class=RawBSONDocument)
DATABASES = ("bench_shop", "bench_ops")
LOAD_KINDS = ("orders", "events", "customers", "metrics")  # no uuid _ids: sandbox_requests.md


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def sandbox(oplog_mb: int) -> Any:
    port = free_port()
    proc = subprocess.Popen([*CLI, "sandbox", "--port", str(port), "--oplog-size-mb",
                             str(oplog_mb), "--noop-interval", "10"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stderr.readline() if proc.stderr else ""
    if "listening" not in line:
        raise SystemExit(f"sandbox did not start: {line}")
    try:
        yield f"mongodb://127.0.0.1:{port}/?replicaSet=rs0", proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def plain_find(client: pymongo.MongoClient) -> dict[str, Any]:
    docs = nbytes = 0
    start = time.perf_counter()
    for db in DATABASES:
        for name in sorted(client[db].list_collection_names()):
            for doc in client.get_database(db, codec_options=RAW)[name].find():
                docs += 1
                nbytes += len(doc.raw)
    seconds = time.perf_counter() - start
    return {"docs": docs, "bytes": nbytes, "seconds": seconds}


class RssSampler(threading.Thread):
    """Peak RSS of every process in the worker's process group, every 0.5 s."""

    def __init__(self, pgid: int) -> None:
        super().__init__(daemon=True)
        self.pgid, self.peaks, self.stop = pgid, {}, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            self.sample()

    def sample(self) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getpgid(int(entry.name)) != self.pgid:
                    continue
                status = (entry / "status").read_text()
            except (OSError, ProcessLookupError):
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            hwm = int(fields.get("VmHWM", "0 kB").split()[0]) // 1024
            name = fields.get("Name", "?").strip()
            key = f"{entry.name}"
            self.peaks[key] = max(self.peaks.get(key, (0, name))[0], hwm), name


TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime + stime in clock ticks, parent pid) of ``pid``; (0, 0) if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0, 0
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12]), int(fields[1])


def machine_busy() -> tuple[int, int]:
    """(busy ticks, all ticks) of the whole machine since boot (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values[:8]) - idle, sum(values[:8])


class CpuSampler(threading.Thread):
    """CPU seconds of every process on the machine, sampled every 0.1 s, named
    by role: the sandbox, the worker's main process, its beat (the child
    without pipes to the main process) and pool processes, the bench itself
    with the CLI commands it ran; anything else is ``other`` (with the three
    biggest by name: another job's load shows here). ``timeline`` is (wall
    time, machine busy ticks, {pid: ticks})."""

    def __init__(self, sandbox_pid: int, worker_pid: int) -> None:
        super().__init__(daemon=True)
        self.sandbox_pid, self.worker_pid = sandbox_pid, worker_pid
        self.timeline: list[tuple[float, int, dict[int, int]]] = []
        self.roles: dict[int, str] = {sandbox_pid: "sandbox", worker_pid: "worker main",
                                      os.getpid(): "bench + CLI"}
        self.names: dict[int, str] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.wait(0.1):
            self.sample(everything=n % 10 == 0)
            n += 1

    def sample(self, everything: bool = True) -> None:
        """Our processes every time (a few files); every process on the machine
        when ``everything`` (new pool processes, other load): cheap enough not
        to disturb what it measures on two cores."""
        ticks: dict[int, int] = {}
        pids = ([int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
                if everything else list(self.roles))
        for pid in pids:
            used, parent = cpu_ticks(pid)
            if not parent:
                continue  # gone
            ticks[pid] = used
            if parent == self.worker_pid and pid not in self.roles:
                self.roles[pid] = self._role(pid)
            elif pid not in self.roles and pid not in self.names:
                self.names[pid] = _command(pid)
        if self.timeline:  # a process that ended keeps its last count
            last = self.timeline[-1][2]
            ticks = {**{p: t for p, t in last.items() if p in self.roles or not everything},
                     **ticks}
        self.timeline.append((time.time(), machine_busy()[0], ticks))

    @staticmethod
    def _role(pid: int) -> str:
        try:
            held = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            return f"pool {pid}"
        return f"pool {pid}" if any(h.startswith("pipe:") for h in held) else "beat"

    def series(self, start: float, end: float) -> list[dict[str, float]]:
        """Share of a core each of our processes used in every 0.1 s from
        ``start`` to ``end`` (``t``: seconds after ``start``): where the
        pipeline waits."""
        samples = [s for s in self.timeline if start <= s[0] <= end]
        out = []
        for before, after in zip(samples, samples[1:], strict=False):
            dt = after[0] - before[0]
            row: dict[str, float] = {"t": round(after[0] - start, 2)}
            for pid, role in self.roles.items():
                if pid in after[2] and pid in before[2]:
                    used = (after[2][pid] - before[2][pid]) / TICK / dt
                    row[role] = round(row.get(role, 0.0) + used, 2)
            row["machine"] = round((after[1] - before[1]) / TICK / dt, 2)
            out.append(row)
        return out

    def between(self, start: float, end: float) -> dict[str, Any]:
        """CPU seconds per role from ``start`` to ``end``; ``ours`` (sandbox and
        worker), ``machine`` (all busy time), ``other`` (the rest)."""
        first = next((s for s in self.timeline if s[0] >= start), None)
        last = next((s for s in reversed(self.timeline) if s[0] <= end), None)
        if first is None or last is None or last[0] <= first[0]:
            return {}
        out: dict[str, Any] = {}
        others: dict[str, float] = {}
        for pid, used in last[2].items():
            spent = (used - first[2].get(pid, 0)) / TICK
            if pid in self.roles:
                out[self.roles[pid]] = round(out.get(self.roles[pid], 0.0) + spent, 2)
            elif spent > 0:
                name = self.names.get(pid, "?")
                others[name] = others.get(name, 0.0) + spent
        out["ours"] = round(sum(v for k, v in out.items() if k != "bench + CLI"), 2)
        out["machine"] = round((last[1] - first[1]) / TICK, 2)
        out["other"] = round(out["machine"] - out["ours"] - out.get("bench + CLI", 0), 2)
        out["other_top"] = {k: round(v, 2) for k, v in
                            sorted(others.items(), key=lambda kv: -kv[1])[:3]}
        out["wall"] = round(last[0] - first[0], 2)
        return out


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)[:60]


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.workdir = args, workdir
        self.env = {**os.environ, "PYTHONPATH": str(ROOT),
                    "BACKUPFLOWS_DATA_DIR": str(workdir / "data"),
                    "BACKUPFLOWS_DAEMON_ID": f"bench{uuid.uuid4().hex[:6]}",
                    "BACKUPFLOWS_LOG_LEVEL": "INFO" if args.keep else "WARNING"}
        self.cleanup: list[Any] = []
        self.cpu: CpuSampler | None = None

    def setup_services(self) -> None:
        if not self.args.redis:
            return
        import psycopg

        name = f"bf_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        prefix = f"bfbench:{uuid.uuid4().hex[:8]}:"
        self.env.update(BACKUPFLOWS_BROKER_URL="redis://127.0.0.1:6379/0",
                        BACKUPFLOWS_RESULT_BACKEND="redis://127.0.0.1:6379/0",
                        BACKUPFLOWS_BROKER_KEY_PREFIX=prefix,
                        BACKUPFLOWS_CATALOG_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        self.cleanup.append(("postgres", name))
        self.cleanup.append(("redis", prefix))

    def teardown_services(self) -> None:
        for kind, what in self.cleanup:
            if kind == "postgres":
                import psycopg

                with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test",
                                     autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{what}" WITH (FORCE)')
            else:
                import redis

                r = redis.Redis()
                keys = list(r.scan_iter(match=what + "*", count=1000))
                for i in range(0, len(keys), 500):
                    r.delete(*keys[i:i + 500])

    def cli(self, *args: str) -> str:
        """Run a CLI command (its CPU counts as ``bench + CLI`` while it runs)."""
        with subprocess.Popen([*CLI, *args], env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as proc:
            if self.cpu is not None:
                self.cpu.roles[proc.pid] = "bench + CLI"
            out, err = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise SystemExit(f"backupflows {' '.join(args)}: {err}")
        return out

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "src", "--json"))[0]

    def start_worker(self) -> subprocess.Popen[bytes]:
        log = open(self.workdir / "worker.log", "wb")  # noqa: SIM115 - lives with the worker
        return subprocess.Popen(
            [*CLI, "worker", "-c", str(self.args.concurrency), "-B", "-s",
             str(self.workdir / "beat")], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def sync(self, uri: str) -> dict[str, Any]:
        """``jobs start`` until the job is routine. The command line's ``--wait``
        looks once a second; this looks every 50 ms (``seconds``: from running
        ``jobs start`` to routine; ``worker_seconds``: the job's own history,
        ``sync.started`` to ``routine``)."""
        self.cli("db", "upgrade")
        self.cli("deployments", "add", "src", "--uri", uri)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("BACKUPFLOWS_")})
        start, self.sync_wall = time.perf_counter(), [time.time()]
        self.cli("jobs", "start", "src")
        self.sync_wall.append(time.time())
        state = wait_routine(start + 3600)
        seconds = time.perf_counter() - start
        self.sync_wall.append(time.time())
        if state != "routine":
            raise SystemExit(f"initial sync ended {state}: {self.status()}")
        phases = self.phases()
        return {"seconds": seconds, "worker_seconds": phases.get("routine"), "phases": phases}

    def cpu_accounting(self, cpu: CpuSampler) -> dict[str, Any]:
        """CPU seconds per process over the whole sync and per phase: the CLI's
        ``jobs start``, planning (``sync.planned``), slicing with preload
        (to ``building``), build and catch-up (to ``validating``),
        validation (to ``routine``), and the poll that sees it."""
        at = self.event_times
        marks = [("jobs start (CLI)", self.sync_wall[0]),
                 ("to planned", at.get("sync.started", self.sync_wall[1])),
                 ("slicing + preload", at.get("sync.planned")),
                 ("build + catch-up", at.get("building")),
                 ("validation", at.get("validating")),
                 ("poll sees routine", at.get("routine")),
                 ("", self.sync_wall[2])]
        out: dict[str, Any] = {"total": cpu.between(self.sync_wall[0], self.sync_wall[2])}
        for (name, begin), (_, end) in zip(marks, marks[1:], strict=False):
            if begin is not None and end is not None:
                out[name] = cpu.between(begin, end)
        return out

    def phases(self) -> dict[str, float]:
        from datetime import datetime

        out = subprocess.run([*CLI[:2], "import json; from backupflows.jobs.status import "
                              "status_rows, job_events; r = status_rows('src')[0]; "
                              "print(json.dumps(job_events(r['job'])))"],
                             env=self.env, capture_output=True, text=True, check=True)
        events = json.loads(out.stdout)
        at = {}
        for e in events:
            key = e["data"].get("to") or e["kind"]
            at.setdefault(key, datetime.fromisoformat(e["created_at"]).timestamp())
        first = at.get("sync.started", 0.0)
        self.event_times = at
        return {k: round(v - first, 2) for k, v in at.items()}


def wait_routine(deadline: float) -> str:
    """The job's state once it is routine (or failed), polled every 50 ms."""
    from sqlalchemy import select

    from backupflows.catalog.db import session_scope
    from backupflows.catalog.models import BackupJob

    state = ""
    while time.perf_counter() < deadline:
        with session_scope(readonly=True) as s:
            state = s.scalar(select(BackupJob.state).order_by(BackupJob.id.desc()).limit(1))
        if state in ("routine", "failed", "resync_required", "terminated", "stopped"):
            return state
        time.sleep(0.05)
    return state


def start_pyspy(out: str | None, *pids: int) -> list[subprocess.Popen[bytes]]:
    """``py-spy record`` of each pid (and its children) until ``stop_pyspy``."""
    if not out:
        return []
    Path(out).mkdir(parents=True, exist_ok=True)
    exe = os.environ.get("PYSPY", "py-spy")
    fmt = os.environ.get("PYSPY_FORMAT", "chrometrace")  # raw: collapsed stacks
    return [subprocess.Popen([exe, "record", "--subprocesses", "--nonblocking", "-r", "200",
                              "-f", fmt, "-t", "-o", f"{out}/{i}-{pid}.{fmt}",
                              "-p", str(pid)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for i, pid in enumerate(pids)]


def stop_pyspy(procs: list[subprocess.Popen[bytes]]) -> None:
    import signal

    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        proc.wait(60)


def measure_lag(bench: Bench, client: pymongo.MongoClient, rate: float,
                seconds: float) -> dict[str, Any]:
    """Writes at ``rate``/s; every 0.25 s a marker write: (wall time, optime)."""
    from backupflows.catalog import optime as packed

    namespaces = [f"{db}.{k}" for db in DATABASES for k in LOAD_KINDS]
    markers: list[tuple[float, Timestamp]] = []
    lags: list[float] = []
    worst: list[tuple[float, float]] = []  # (lag, marker wall time)
    stop = threading.Event()

    def poll() -> None:
        from backupflows.jobs.status import status_rows

        while not stop.is_set() or markers:
            head = status_rows("src")[0]["head_ts"]
            if head:
                ts = Timestamp(head["t"], head["i"])
                now = time.time()
                while markers and markers[0][1] <= ts:
                    written = markers.pop(0)[0]
                    lags.append(now - written)
                    worst.append((now - written, written))
            time.sleep(0.05)

    os.environ.update({k: v for k, v in bench.env.items() if k.startswith("BACKUPFLOWS_")})
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    marker = client.bench_marker.m
    with WriteLoad(client, namespaces, rate_per_s=rate, seed=9) as load:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            with client.start_session() as session:
                marker.insert_one({"_id": n}, session=session)
                markers.append((time.time(), session.operation_time))
            n += 1
            time.sleep(0.25)
    stats = load.stats
    stop.set()
    poller.join(120)
    del packed
    return {"writes_per_s": round(stats.rate, 1), "errors": stats.errors,
            "markers": len(lags), "lag_max_s": round(max(lags), 2) if lags else None,
            "lag_p50_s": round(statistics.median(lags), 2) if lags else None,
            "lag_p95_s": round(sorted(lags)[int(0.95 * (len(lags) - 1))], 2) if lags else None,
            "worst": [(round(lag, 2), time.strftime("%H:%M:%S", time.gmtime(at))
                       + f".{int(at % 1 * 1000):03d}Z") for lag, at in sorted(worst)[-5:]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=220)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--redis", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-snapshots", action="store_true",
                        help="scheduled snapshots off (a control: the job's first snapshot, "
                             "due right after the sync, holds a pool process for seconds "
                             "during the lag measurement)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (catalog, worker.log at INFO level)")
    parser.add_argument("--pyspy", default=None, metavar="DIR",
                        help="record the initial sync with py-spy (chrometrace, every "
                             "worker and the sandbox) into DIR")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_sync_"))
    bench = Bench(args, workdir)
    bench.setup_services()
    result: dict[str, Any] = {"benchmark": "bench_sync", "args": vars(args),
                              "machine": {"cpus": os.cpu_count(),
                                          "python": platform.python_version()}}
    try:
        with sandbox(oplog_mb=max(2048, args.mb * 4)) as (uri, sandbox_pid):
            client: pymongo.MongoClient = pymongo.MongoClient(uri)
            gen = generate(client, databases=DATABASES, target_bytes=args.mb * 1024 * 1024,
                           seed=args.seed)
            result["data"] = {"docs": gen.documents, "bytes": gen.bytes}
            print(f"sample data: {gen}", flush=True)
            before = cpu_ticks(sandbox_pid)[0], time.process_time()
            result["find"] = plain_find(client)
            result["find"]["cpu_s"] = {
                "sandbox": round((cpu_ticks(sandbox_pid)[0] - before[0]) / TICK, 2),
                "client": round(time.process_time() - before[1], 2)}
            print(f"plain find: {result['find']}", flush=True)
            worker = bench.start_worker()
            sampler = RssSampler(worker.pid)
            sampler.start()
            cpu = bench.cpu = CpuSampler(sandbox_pid, worker.pid)
            cpu.start()
            try:
                time.sleep(3)
                spy = start_pyspy(args.pyspy, worker.pid, sandbox_pid)
                result["sync"] = bench.sync(uri)
                stop_pyspy(spy)
                result["sync"]["ratio_to_find"] = round(
                    result["sync"]["seconds"] / result["find"]["seconds"], 2)
                print(f"initial sync: {result['sync']}", flush=True)
                time.sleep(0.3)
                result["sync"]["cpu_s"] = bench.cpu_accounting(cpu)
                for phase, row in result["sync"]["cpu_s"].items():
                    if row:
                        print(f"  cpu {phase:<20} {row}", flush=True)
                result["sync"]["cpu_series"] = cpu.series(bench.sync_wall[0], bench.sync_wall[2])
                if args.no_snapshots:  # before beat's first snapshot dispatch (60 s)
                    bench.cli("snapshots", "policy", "src", "--disable")
                lag_start = time.time()
                result["lag"] = measure_lag(bench, client, args.rate, args.load_seconds)
                result["lag"]["cpu_s"] = cpu.between(lag_start, time.time())
                print(f"routine lag: {result['lag']}", flush=True)
            finally:
                sampler.stop.set()
                cpu.stop.set()
                sampler.sample()
                worker.terminate()
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, 9)
            result["rss_peak_mb"] = {f"{name}[{pid}]": mb
                                     for pid, (mb, name) in sorted(sampler.peaks.items())}
            print(f"peak RSS (MB): {result['rss_peak_mb']}", flush=True)
    finally:
        bench.teardown_services()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench_sync-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
