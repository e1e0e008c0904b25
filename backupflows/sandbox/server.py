"""``SandboxServer``: a TCP server pymongo takes for the primary of ``rs0``.

One thread accepts connections, one thread per connection reads requests and
writes replies, and a background thread writes the periodic noop (every
``noop_interval`` seconds) and reaps idle cursors. A malformed message closes
its connection only. Use it as a context manager or with ``start()``/``stop()``::

    with SandboxServer() as server:
        client = pymongo.MongoClient(server.uri)

Fault injection (see faults.py) is available as methods and as admin commands.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from bson.int64 import Int64
from bson.objectid import ObjectId

from backupflows.bsonorder import KeyError_
from backupflows.sandbox import commands, wire
from backupflows.sandbox.errors import CommandError
from backupflows.sandbox.faults import FaultInjector
from backupflows.sandbox.oplog import ts_value
from backupflows.sandbox.store import Store

log = logging.getLogger(__name__)

DEFAULT_OPLOG_SIZE = 192 * 1024 * 1024


@dataclass
class Connection:
    """One client connection."""

    sock: socket.socket
    peer: str
    conn_id: int
    app_name: str = ""
    closed: bool = False
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class SandboxServer:
    """A MongoDB-wire-compatible one-member replica set (``rs0``)."""

    set_name = "rs0"

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 oplog_size_bytes: int = DEFAULT_OPLOG_SIZE,
                 noop_interval: float = 10.0) -> None:
        commands.load_handlers()
        self.host, self._requested_port = host, port
        self.port = 0
        self.noop_interval = noop_interval
        self.store = Store(oplog_size_bytes)
        self.faults = FaultInjector()
        self.process_id = ObjectId()
        self.topology_counter = 0
        self.started_at = time.time()
        self._conn_ids = itertools.count(1)
        self._conns: dict[int, Connection] = {}
        self._conns_lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.total_connections = 0

    # -- addresses ---------------------------------------------------------
    @property
    def address(self) -> str:
        """host:port as advertised in hello (a wildcard bind advertises 127.0.0.1)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"{host}:{self.port}"

    @property
    def uri(self) -> str:
        return f"mongodb://{self.address}/?replicaSet={self.set_name}"

    @property
    def direct_uri(self) -> str:
        return f"mongodb://{self.address}/?directConnection=true"

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> SandboxServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self._requested_port))
        listener.listen(128)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept_loop, "sandbox-accept")
        self._spawn(self._background_loop, "sandbox-noop")
        log.info("sandbox listening on %s", self.address)
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self.store.lock:
            self.store.cond.notify_all()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept()
            except OSError:
                pass
            self._listener.close()
        self.close_all_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait_stopping(self, seconds: float) -> bool:
        return self._stopping.wait(seconds)

    def _spawn(self, target, name: str, *args) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, args=args, daemon=True)
        thread.start()
        if not name.startswith("sandbox-conn"):
            self._threads.append(thread)
        return thread

    # -- fault injection (Python API) --------------------------------------
    def close_all_connections(self) -> int:
        """Drop every client connection (pymongo reconnects on its next use)."""
        with self._conns_lock:
            conns = list(self._conns.values())
            self._conns.clear()
        for conn in conns:
            conn.close()
        return len(conns)

    def fail_commands(self, names: list[str] | None, error_code: int = 0, times: int = 1,
                      close_connection: bool = False, block_ms: int = 0) -> None:
        """Fail the next ``times`` commands named in ``names`` (None = any)."""
        data = {"failCommands": names, "errorCode": error_code,
                "closeConnection": close_connection}
        if block_ms:
            data.update(blockConnection=True, blockTimeMS=block_ms)
        self.faults.configure({"times": times}, data)

    def clear_faults(self) -> None:
        self.faults.configure("off", {})
        self.faults.latency_ms = 0

    def set_latency(self, ms: float) -> None:
        """Delay every command by ``ms`` milliseconds."""
        self.faults.latency_ms = max(0.0, float(ms))

    def truncate_oplog_before(self, secs: int, inc: int = 0) -> int:
        """Drop oplog entries older than Timestamp(secs, inc) (forces a gap)."""
        with self.store.lock:
            return self.store.oplog.truncate_before(ts_value(secs, inc))

    # -- threads -----------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, addr = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, f"{addr[0]}:{addr[1]}", next(self._conn_ids))
            with self._conns_lock:
                self._conns[conn.conn_id] = conn
                self.total_connections += 1
            self._spawn(self._serve, f"sandbox-conn-{conn.conn_id}", conn)

    def _background_loop(self) -> None:
        """Periodic noop and cursor reaping. Like the server's NoopWriter, the
        noop is written only when nothing else was written since the last tick,
        so an idle oplog still advances every ``noop_interval`` seconds."""
        next_noop = time.monotonic() + self.noop_interval
        last_known = self.store.oplog.last_ts
        while not self._stopping.wait(min(1.0, max(0.01, next_noop - time.monotonic()))):
            if time.monotonic() >= next_noop:
                with self.store.lock:
                    if self.store.oplog.last_ts == last_known:
                        self.store.oplog.noop("periodic noop")
                    last_known = self.store.oplog.last_ts
                next_noop = time.monotonic() + self.noop_interval
            with self.store.lock:
                self.store.cursors.reap()
                self.store.sessions.reap()

    def _serve(self, conn: Connection) -> None:
        try:
            while not self._stopping.is_set() and not conn.closed:
                request_id, op_code, payload = wire.read_message(conn.sock)
                request = wire.parse_message(request_id, op_code, payload)
                if not self._handle(conn, request):
                    break
        except (ConnectionError, OSError):
            pass
        except (wire.ProtocolError, KeyError_) as exc:
            log.info("closing connection %s: %s", conn.peer, exc)
        except Exception:  # never let one connection take the server down
            log.exception("unexpected error on connection %s", conn.peer)
        finally:
            with self._conns_lock:
                self._conns.pop(conn.conn_id, None)
            conn.close()

    def _handle(self, conn: Connection, request: wire.Request) -> bool:
        """Serve one request; False when the connection must close."""
        body = request.body
        name = next(iter(body), "")
        if self.faults.latency_ms:
            time.sleep(self.faults.latency_ms / 1000.0)
        action = self.faults.check(name, conn.app_name, body)
        ctx = commands.Ctx(self, conn, str(body.get("$db", "admin")), body, name,
                           request.sequences, raw_body=request.raw_body)
        if action is not None:
            if action.block_ms:
                time.sleep(action.block_ms / 1000.0)
            if action.close_connection:
                return False
            if action.error_code:
                err = CommandError(action.error_code,
                                   f"Failing command {name} via 'failCommand' failpoint")
                err.labels = action.labels
                reply = commands.error_reply(self.store, err, self.topology_version())
                return self._send(conn, request, reply)
        reply = commands.run(ctx)
        ok = self._send(conn, request, reply)
        for callback in ctx.after:
            callback()
        return ok and not conn.closed

    def _send(self, conn: Connection, request: wire.Request, reply: bytes) -> bool:
        if request.more_to_come:
            return True
        if request.op_code == wire.OP_QUERY:
            message = wire.build_reply(request.request_id, reply)
        else:
            message = wire.build_msg(request.request_id, reply)
        with conn.send_lock:
            conn.sock.sendall(message)
        return True

    # -- facts for hello/serverStatus --------------------------------------
    def topology_version(self) -> dict:
        return {"processId": self.process_id, "counter": Int64(self.topology_counter)}

    def connection_count(self) -> int:
        with self._conns_lock:
            return len(self._conns)

    def pid(self) -> int:
        return os.getpid()
