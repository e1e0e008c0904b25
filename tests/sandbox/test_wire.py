"""The sandbox's wire protocol, spoken over raw sockets and through pymongo."""

from __future__ import annotations

import socket
import struct
import time

import bson
import pymongo
import pytest
from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument

pytestmark = pytest.mark.sandbox_only

HEADER = struct.Struct("<iiii")


def op_msg(body: dict, request_id: int = 1, flags: int = 0, sequences: dict | None = None,
           checksum: bool = False) -> bytes:
    payload = struct.pack("<I", flags | (1 if checksum else 0)) + b"\x00" + bson.encode(body)
    for name, docs in (sequences or {}).items():
        section = name.encode() + b"\x00" + b"".join(docs)
        payload += b"\x01" + struct.pack("<i", len(section) + 4) + section
    if checksum:
        payload += b"\x00\x00\x00\x00"
    return HEADER.pack(16 + len(payload), request_id, 0, 2013) + payload


def op_query(body: dict, collection: str = "admin.$cmd", request_id: int = 7) -> bytes:
    payload = struct.pack("<i", 0) + collection.encode() + b"\x00" + struct.pack("<ii", 0, -1)
    payload += bson.encode(body)
    return HEADER.pack(16 + len(payload), request_id, 0, 2004) + payload


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_reply(sock: socket.socket) -> tuple[int, int, dict]:
    length, _rid, response_to, op_code = HEADER.unpack(recv_exact(sock, 16))
    payload = recv_exact(sock, length - 16)
    if op_code == 2013:
        return response_to, op_code, bson.decode(payload[5:])
    assert op_code == 1
    flags, cursor_id, start, count = struct.unpack_from("<iqii", payload)
    assert count == 1
    return response_to, op_code, bson.decode(payload[20:])


def connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def is_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def still_serves(server) -> bool:
    with pymongo.MongoClient(server.direct_uri, serverSelectionTimeoutMS=3000) as client:
        return client.admin.command("ping")["ok"] == 1.0


def test_legacy_op_query_handshake_gets_op_reply(sandbox):
    with connect(sandbox) as sock:
        sock.sendall(op_query({"isMaster": 1, "helloOk": True}))
        response_to, op_code, reply = read_reply(sock)
    assert (response_to, op_code) == (7, 1)
    assert reply["ismaster"] is True and reply["setName"] == "rs0"
    assert reply["helloOk"] is True and reply["maxWireVersion"] == 21
    assert reply["hosts"] == [sandbox.address] == [reply["me"]]


def test_op_msg_with_checksum_and_document_sequence(sandbox):
    docs = [bson.encode({"_id": 1, "x": Int64(5), "d": Decimal128("1.10"), "f": 1.0}),
            bson.encode({"z": 1, "_id": 2})]
    with connect(sandbox) as sock:
        sock.sendall(op_msg({"insert": "c", "$db": "w"}, 11, sequences={"documents": docs},
                            checksum=True))
        response_to, _, reply = read_reply(sock)
    assert response_to == 11 and reply["n"] == 2 and reply["ok"] == 1.0
    with pymongo.MongoClient(sandbox.uri) as client:
        raw = client.w.get_collection("c", codec_options=CodecOptions(
            document_class=RawBSONDocument))
        stored = list(raw.find().sort("_id", 1))
    assert stored[0].raw == docs[0]  # byte for byte, types and order kept
    assert list(stored[1]) == ["_id", "z"]  # the server moves _id first


def test_documents_in_the_body_are_stored_byte_for_byte(sandbox):
    # A Symbol (type 0x0E) would come back as a String if the server re-encoded.
    symbol = b"\x0es\x00\x04\x00\x00\x00abc\x00"
    body = b"\x10_id\x00\x01\x00\x00\x00" + symbol
    doc = struct.pack("<i", len(body) + 5) + body + b"\x00"
    command = {"insert": "c", "$db": "w", "documents": [RawBSONDocument(doc)]}
    with connect(sandbox) as sock:
        sock.sendall(op_msg(command, 12))
        assert read_reply(sock)[2]["n"] == 1
    with pymongo.MongoClient(sandbox.uri) as client:
        raw = client.w.get_collection("c", codec_options=CodecOptions(
            document_class=RawBSONDocument))
        assert raw.find_one().raw == doc
        entry = client.local.get_collection("oplog.rs", codec_options=CodecOptions(
            document_class=RawBSONDocument)).find_one({"op": "i"})
        assert entry["o"].raw == doc


def test_batches_hand_back_the_stored_bytes_in_order(sandbox):
    # Cursor replies are spliced from the stored documents: across first
    # batches, size-capped getMores (16 MB) and small batchSizes every
    # document comes back byte for byte (a Symbol would turn into a String
    # if anything re-encoded it), in _id order, and the reply's own fields
    # (id, ns, ok, operationTime) are intact.
    symbol = b"\x0es\x00\x04\x00\x00\x00abc\x00"
    docs = []
    for i in range(60):
        body = (b"\x10_id\x00" + struct.pack("<i", i) + symbol
                + b"\x02pad\x00" + struct.pack("<i", 700_001 * (i % 3) + 1)
                + b"p" * (700_001 * (i % 3)) + b"\x00")
        docs.append(struct.pack("<i", len(body) + 5) + body + b"\x00")
    raw_opts = CodecOptions(document_class=RawBSONDocument)
    with pymongo.MongoClient(sandbox.uri) as client:
        coll = client.w.get_collection("big", codec_options=raw_opts)
        coll.insert_many([RawBSONDocument(d) for d in docs])
        assert [d.raw for d in coll.find().sort("_id", 1)] == docs
        assert [d.raw for d in coll.find(batch_size=7).sort("_id", 1)] == docs
        reply = client.w.command("find", "big", batchSize=2)
    assert reply["ok"] == 1.0 and "operationTime" in reply
    assert reply["cursor"]["ns"] == "w.big" and reply["cursor"]["id"] != 0
    assert [d["_id"] for d in reply["cursor"]["firstBatch"]] == [0, 1]


def test_more_to_come_gets_no_reply(sandbox):
    with connect(sandbox) as sock:
        sock.sendall(op_msg({"insert": "c", "$db": "w", "documents": [{"_id": 1}],
                             "writeConcern": {"w": 0}}, 21, flags=2))
        sock.sendall(op_msg({"ping": 1, "$db": "admin"}, 22))
        response_to, _, reply = read_reply(sock)
    assert response_to == 22 and reply["ok"] == 1.0
    with pymongo.MongoClient(sandbox.uri) as client:
        assert client.w.c.count_documents({}) == 1


@pytest.mark.parametrize("garbage", [
    HEADER.pack(5, 1, 0, 2013),                                     # length below a header
    HEADER.pack(16 + 6, 1, 0, 2013) + b"\x00\x00\x00\x00\x07\x00",  # unknown section kind
    HEADER.pack(16 + 14, 1, 0, 2013) + b"\x00\x00\x00\x00\x00" + b"\x09\x00\x00\x00\x10a\x00\x01\x00",
    HEADER.pack(16 + 4, 1, 0, 2012) + b"\x00\x00\x00\x00",          # OP_COMPRESSED
    HEADER.pack(100_000_000, 1, 0, 2013),                           # larger than allowed
])
def test_malformed_message_closes_only_that_connection(sandbox, garbage):
    with pymongo.MongoClient(sandbox.uri) as client:
        client.admin.command("ping")
        with connect(sandbox) as sock:
            sock.sendall(garbage)
            assert is_closed(sock)
        assert client.admin.command("ping")["ok"] == 1.0
    assert still_serves(sandbox)


def test_unknown_command_and_bad_arguments_keep_the_connection(sandbox):
    with connect(sandbox) as sock:
        sock.sendall(op_msg({"frobnicate": 1, "$db": "admin"}, 31))
        _, _, reply = read_reply(sock)
        assert reply["code"] == 59 and reply["ok"] == 0.0
        sock.sendall(op_msg({"find": 5, "$db": "x"}, 32))
        _, _, reply = read_reply(sock)
        assert reply["ok"] == 0.0 and reply["code"] == 73
        sock.sendall(op_msg({"ping": 1, "$db": "admin"}, 33))
        assert read_reply(sock)[2]["ok"] == 1.0


def test_awaitable_hello_waits_for_max_await_time(sandbox):
    with connect(sandbox) as sock:
        sock.sendall(op_msg({"hello": 1, "$db": "admin"}, 41))
        version = read_reply(sock)[2]["topologyVersion"]
        started = time.monotonic()
        sock.sendall(op_msg({"hello": 1, "$db": "admin", "topologyVersion": version,
                             "maxAwaitTimeMS": 300}, 42))
        _, _, reply = read_reply(sock)
        assert time.monotonic() - started >= 0.29
        assert reply["isWritablePrimary"] is True
        stale = {"processId": bson.ObjectId(), "counter": Int64(0)}
        started = time.monotonic()
        sock.sendall(op_msg({"hello": 1, "$db": "admin", "topologyVersion": stale,
                             "maxAwaitTimeMS": 5000}, 43))
        read_reply(sock)
        assert time.monotonic() - started < 1.0


def test_replica_set_discovery_and_direct_connection(sandbox):
    with pymongo.MongoClient(sandbox.uri) as client:
        client.admin.command("ping")
        assert client.primary == ("127.0.0.1", sandbox.port)
        hello = client.admin.command("hello")
    for field in ("topologyVersion", "lastWrite", "logicalSessionTimeoutMinutes",
                  "maxBsonObjectSize", "maxMessageSizeBytes", "maxWriteBatchSize",
                  "localTime", "connectionId", "electionId"):
        assert field in hello
    assert hello["secondary"] is False and hello["primary"] == sandbox.address
    assert hello["lastWrite"]["opTime"]["t"] == 1
    with pymongo.MongoClient(sandbox.direct_uri) as client:
        client.d.c.insert_one({"_id": 1})
        assert client.d.c.find_one() == {"_id": 1}
        assert client.admin.command("buildInfo")["versionArray"][:2] == [7, 0]


def test_server_stop_wakes_waiting_clients_quickly(make_sandbox):
    server = make_sandbox()
    client = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=500)
    client.admin.command("ping")
    time.sleep(0.2)  # the monitor is now inside an awaitable hello
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0
    client.close()


def test_a_failing_handler_answers_internal_error(sandbox, monkeypatch):
    from backupflows.sandbox import commands

    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setitem(commands.COMMANDS, "ping", commands.Command(broken))
    with connect(sandbox) as sock:
        sock.sendall(op_msg({"ping": 1, "$db": "admin"}, 51))
        _, _, reply = read_reply(sock)
        assert reply["ok"] == 0.0 and reply["code"] == 1
        assert reply["codeName"] == "InternalError" and "boom" in reply["errmsg"]
        sock.sendall(op_msg({"buildInfo": 1, "$db": "admin"}, 52))
        assert read_reply(sock)[2]["ok"] == 1.0
