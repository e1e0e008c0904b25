"""A tiny wire-protocol server that answers like a standalone mongod (no
``setName``): enough for pymongo to connect, ping and ask ``hello``."""

from __future__ import annotations

import socket
import threading

import bson
from bson.int64 import Int64

from backupflows.sandbox import wire

_ANSWER = {
    "isWritablePrimary": True, "ismaster": True, "helloOk": True,
    "maxBsonObjectSize": 16 * 1024 * 1024, "maxMessageSizeBytes": 48_000_000,
    "maxWriteBatchSize": 100_000, "logicalSessionTimeoutMinutes": 30,
    "connectionId": 1, "minWireVersion": 0, "maxWireVersion": 21, "readOnly": False,
    "version": "7.0.14", "versionArray": [7, 0, 14, 0], "ok": 1.0,
    "topologyVersion": {"processId": bson.ObjectId(), "counter": Int64(0)},
}


class StandaloneServer:
    """Answers every command with a standalone hello (and ok: 1)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            while not self.stopping.is_set():
                request_id, op_code, payload = wire.read_message(sock)
                request = wire.parse_message(request_id, op_code, payload)
                body = bson.encode(_ANSWER)
                if request.op_code == wire.OP_QUERY:
                    sock.sendall(wire.build_reply(request.request_id, body))
                else:
                    sock.sendall(wire.build_msg(request.request_id, body))
        except (OSError, wire.ProtocolError, ConnectionError):
            pass
        finally:
            sock.close()

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
