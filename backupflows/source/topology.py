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
