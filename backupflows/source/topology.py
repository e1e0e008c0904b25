"""What the source is: a replica set with an oplog, and where its oplog stands.

``check_replica_set`` refuses a standalone server (or a mongos): without an
oplog there is nothing to follow. ``newest_optime`` is the initial sync's
``T0``: the newest entry of ``local.oplog.rs`` at the moment it is asked,
read with ``{$natural: -1}``; ``oldest_optime`` is where the oplog starts
(the oplog-gap check compares it with the last stored optime).
"""

from __future__ import annotations

from dataclasses import dataclass

from bson.timestamp import Timestamp
from pymongo import MongoClient

from backupflows.errors import SourceError
from backupflows.source.client import META, describe, source_call

OPLOG_DB, OPLOG_COLL = "local", "oplog.rs"


@dataclass(frozen=True)
class ReplicaSetInfo:
    """The answer of ``hello`` and ``buildInfo`` that a backup job records."""

    set_name: str
    members: list[str]
    primary: str | None
    me: str | None
    version: str
    max_wire_version: int


def check_replica_set(client: MongoClient) -> ReplicaSetInfo:
    """The replica set behind ``client``, or ``SourceError`` when it is not one."""
    where = describe(client)
    admin = client.get_database("admin", codec_options=META)
    with source_call(f"source {where}"):
        hello = admin.command("hello")
        build = admin.command("buildInfo")
    if hello.get("msg") == "isdbgrid":
        raise SourceError(f"source {where} is a mongos (sharded cluster router): back up each "
                          "shard's replica set and the config server replica set instead")
    set_name = hello.get("setName")
    if not set_name:
        raise SourceError(f"source {where} is not a replica set: no oplog to follow "
                          "(start mongod with --replSet and run rs.initiate())")
    return ReplicaSetInfo(
        set_name=str(set_name),
        members=[str(h) for h in hello.get("hosts", [])],
        primary=hello.get("primary"),
        me=hello.get("me"),
        version=str(build.get("version", "unknown")),
        max_wire_version=int(hello.get("maxWireVersion", 0)),
    )


def fetch_start_optime(client: MongoClient) -> Timestamp:
    """Where oplog FETCHING of an initial sync starts (the ``T0`` of the
    first oplog round): the newest oplog entry, or earlier when a
    transaction that already wrote oplog entries is still open, so that the
    whole ``partialTxn``/``prepare`` chain of every transaction committed
    after ``T0`` is in the oplog store (as the server's initial sync picks
    its ``beginFetchingTimestamp``).

    1. ``newest``: the newest oplog entry;
    2. the oldest ``startOpTime`` of ``config.transactions`` entries in
       state ``inProgress`` or ``prepared`` (a missing collection is fine);
    3. a transaction may have committed between 1 and 2 (it is no longer in
       progress, yet its chain starts before ``newest``): commit entries
       written since ``newest`` whose ``prevOpTime`` is older are followed
       back to the start of their chain.
    The data copy (slicing) starts after this call.
    """
    where = describe(client)
    with source_call(f"finding where to start reading the oplog of {where}"):
        newest = edge_optime_raw(client, -1)
        start = min(newest, _oldest_open_transaction(client) or newest)
        for chained in _chains_committed_since(client, newest):
            start = min(start, chained)
    return start


def _oldest_open_transaction(client: MongoClient) -> Timestamp | None:
    table = client.get_database("config", codec_options=META)["transactions"]
    doc = table.find_one({"state": {"$in": ["inProgress", "prepared"]},
                          "startOpTime.ts": {"$exists": True}},
                         {"startOpTime": 1}, sort=[("startOpTime.ts", 1)])
    ts = (doc or {}).get("startOpTime", {}).get("ts")
    return ts if isinstance(ts, Timestamp) else None


def _chains_committed_since(client: MongoClient, newest: Timestamp) -> list[Timestamp]:
    """Starts of the transaction chains whose commit came after ``newest``
    but whose earlier entries are at or before it."""
    oplog = client.get_database(OPLOG_DB, codec_options=META)[OPLOG_COLL]
    commits = oplog.find({"ts": {"$gt": newest}, "op": "c",
                          "prevOpTime.ts": {"$gt": Timestamp(0, 0), "$lte": newest}},
                         {"prevOpTime": 1})
    starts = []
    for commit in commits:
        ts = commit["prevOpTime"]["ts"]
        while True:   # walk back: the chain's first entry has prevOpTime ts 0
            entry = oplog.find_one({"ts": ts}, {"prevOpTime": 1})
            prev = ((entry or {}).get("prevOpTime") or {}).get("ts")
            if entry is None or not isinstance(prev, Timestamp) or prev == Timestamp(0, 0):
                break
            ts = prev
        starts.append(ts)
    return starts


def newest_optime(client: MongoClient) -> Timestamp:
    """``ts`` of the newest oplog entry (the initial sync's ``T0``)."""
    return _edge_optime(client, -1)


def oldest_optime(client: MongoClient) -> Timestamp:
    """``ts`` of the oldest oplog entry still in the (capped) oplog."""
    return _edge_optime(client, 1)


def _edge_optime(client: MongoClient, direction: int) -> Timestamp:
    with source_call(f"reading the oplog of {describe(client)}"):
        return edge_optime_raw(client, direction)


def edge_optime_raw(client: MongoClient, direction: int) -> Timestamp:
    """Oldest (1) or newest (-1) oplog ``ts``; pymongo errors pass through
    (for callers with their own retries)."""
    where = describe(client)
    oplog = client.get_database(OPLOG_DB, codec_options=META)[OPLOG_COLL]
    doc = oplog.find_one({}, {"ts": 1}, sort=[("$natural", direction)])
    if doc is None:
        raise SourceError(f"source {where} has an empty or missing oplog (local.oplog.rs): "
                          "is it a replica set member?")
    ts = doc.get("ts")
    if not isinstance(ts, Timestamp):
        raise SourceError(f"source {where}: oplog entry without a Timestamp ts: {doc!r:.200}")
    return ts
