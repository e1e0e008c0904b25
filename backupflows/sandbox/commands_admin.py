"""Handshake, topology, diagnostics, sessions, transactions and fault commands.

Sandbox-only admin commands (not in MongoDB):

- ``{sandboxCloseConnections: 1}``: after replying, close every client
  connection (this one included); drivers reconnect on next use.
- ``{sandboxSetLatency: 1, ms: N}``: delay every later command by N ms (0 = off).
- ``{sandboxTruncateOplog: 1, before: Timestamp}``: drop oplog entries older
  than ``before`` (the newest entry always stays), to provoke an oplog gap.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import time
from typing import Any

from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from backupflows.sandbox.commands import Ctx, command
from backupflows.sandbox.errors import BAD_VALUE, INVALID_OPTIONS, CommandError
from backupflows.sandbox.oplog import TERM, ts_parts, ts_value

VERSION = "7.0.14"
VERSION_ARRAY = [7, 0, 14, 0]
MAX_WIRE_VERSION = 21
MAX_BSON_SIZE = 16 * 1024 * 1024
MAX_MESSAGE_SIZE = 48_000_000
MAX_WRITE_BATCH = 100_000
ELECTION_ID = ObjectId("7fffffff0000000000000001")


def _now() -> dt.datetime:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def optime(store) -> dict:
    return {"ts": Timestamp(*ts_parts(store.oplog.last_ts)), "t": Int64(TERM)}


def last_write_date(store) -> dt.datetime:
    return dt.datetime.fromtimestamp(store.oplog.last_wall_ms / 1000, dt.UTC).replace(
        tzinfo=None)


def hello_reply(ctx: Ctx, legacy: bool) -> dict:
    server, store = ctx.server, ctx.store
    reply: dict[str, Any] = {
        "topologyVersion": {"processId": server.process_id,
                            "counter": Int64(server.topology_counter)},
        "hosts": [server.address], "setName": server.set_name, "setVersion": 1,
    }
    reply["ismaster" if legacy else "isWritablePrimary"] = True
    reply.update({
        "secondary": False, "primary": server.address, "me": server.address,
        "electionId": ELECTION_ID,
        "lastWrite": {"opTime": optime(store), "lastWriteDate": last_write_date(store),
                      "majorityOpTime": optime(store),
                      "majorityWriteDate": last_write_date(store)},
        "maxBsonObjectSize": MAX_BSON_SIZE, "maxMessageSizeBytes": MAX_MESSAGE_SIZE,
        "maxWriteBatchSize": MAX_WRITE_BATCH, "localTime": _now(),
        "logicalSessionTimeoutMinutes": 30, "connectionId": ctx.conn.conn_id,
        "minWireVersion": 0, "maxWireVersion": MAX_WIRE_VERSION, "readOnly": False,
    })
    if ctx.arg("helloOk"):
        reply["helloOk"] = True
    return reply


@command("hello", "isMaster", "ismaster", locked=False)
def hello(ctx: Ctx) -> dict:
    client = ctx.arg("client")
    if isinstance(client, dict):
        ctx.conn.app_name = str((client.get("application") or {}).get("name", ""))
    version, max_wait = ctx.arg("topologyVersion"), ctx.arg("maxAwaitTimeMS")
    if isinstance(version, dict) and max_wait is not None \
            and version.get("processId") == ctx.server.process_id \
            and version.get("counter") == ctx.server.topology_counter:
        ctx.server.wait_stopping(max(0, int(max_wait)) / 1000.0)
    return hello_reply(ctx, legacy=ctx.name != "hello")


@command("ping", locked=False)
def ping(ctx: Ctx) -> dict:
    return {}


@command("buildInfo", "buildinfo", locked=False)
def build_info(ctx: Ctx) -> dict:
    return {"version": VERSION, "gitVersion": "sandbox", "modules": [],
            "allocator": "system", "javascriptEngine": "none", "sysInfo": "deprecated",
            "versionArray": VERSION_ARRAY, "bits": 64, "debug": False,
            "maxBsonObjectSize": MAX_BSON_SIZE, "storageEngines": ["wiredTiger"],
            "openssl": {"running": "disabled", "compiled": "disabled"}}


def _member(ctx: Ctx) -> dict:
    store, server = ctx.store, ctx.server
    wall = last_write_date(store)
    return {"_id": 0, "name": server.address, "health": 1.0, "state": 1,
            "stateStr": "PRIMARY", "uptime": int(time.time() - server.started_at),
            "optime": optime(store), "optimeDate": wall, "lastAppliedWallTime": wall,
            "lastDurableWallTime": wall, "syncSourceHost": "", "syncSourceId": -1,
            "infoMessage": "", "electionTime": Timestamp(int(server.started_at), 1),
            "electionDate": dt.datetime.fromtimestamp(int(server.started_at), dt.UTC)
            .replace(tzinfo=None), "configVersion": 1, "configTerm": TERM, "self": True,
            "lastHeartbeatMessage": ""}


@command("replSetGetStatus")
def repl_set_get_status(ctx: Ctx) -> dict:
    store = ctx.store
    wall = last_write_date(store)
    times = {name: optime(store) for name in
             ("lastCommittedOpTime", "readConcernMajorityOpTime", "appliedOpTime",
              "durableOpTime")}
    times.update(lastAppliedWallTime=wall, lastDurableWallTime=wall,
                 lastCommittedWallTime=wall, readConcernMajorityWallTime=wall)
    return {"set": ctx.server.set_name, "date": _now(), "myState": 1, "term": Int64(TERM),
            "syncSourceHost": "", "syncSourceId": -1, "heartbeatIntervalMillis": Int64(2000),
            "majorityVoteCount": 1, "writeMajorityCount": 1, "votingMembersCount": 1,
            "writableVotingMembersCount": 1, "optimes": times, "members": [_member(ctx)]}


@command("replSetGetConfig")
def repl_set_get_config(ctx: Ctx) -> dict:
    server = ctx.server
    return {"config": {"_id": server.set_name, "version": 1, "term": TERM,
                       "members": [{"_id": 0, "host": server.address, "arbiterOnly": False,
                                    "buildIndexes": True, "hidden": False, "priority": 1.0,
                                    "tags": {}, "secondaryDelaySecs": Int64(0), "votes": 1}],
                       "protocolVersion": Int64(1), "writeConcernMajorityJournalDefault": True,
                       "settings": {"chainingAllowed": True,
                                    "heartbeatIntervalMillis": 2000}}}


@command("serverStatus")
def server_status(ctx: Ctx) -> dict:
    server, store = ctx.server, ctx.store
    uptime = time.time() - server.started_at
    oplog = store.oplog.coll
    return {"host": socket.gethostname(), "version": VERSION, "process": "mongod",
            "pid": Int64(os.getpid()), "uptime": float(int(uptime)),
            "uptimeMillis": Int64(int(uptime * 1000)), "uptimeEstimate": Int64(int(uptime)),
            "localTime": _now(),
            "connections": {"current": server.connection_count(), "available": 1_000_000,
                            "totalCreated": server.total_connections},
            "opcounters": {k: Int64(v) for k, v in store.opcounters.items()},
            "repl": {"topologyVersion": {"processId": server.process_id,
                                         "counter": Int64(server.topology_counter)},
                     "hosts": [server.address], "setName": server.set_name,
                     "setVersion": 1, "isWritablePrimary": True, "secondary": False,
                     "primary": server.address, "me": server.address,
                     "electionId": ELECTION_ID, "lastWrite": {
                         "opTime": optime(store), "lastWriteDate": last_write_date(store)}},
            "storageEngine": {"name": "wiredTiger", "supportsCommittedReads": True,
                              "persistent": False},
            "oplog": {"sizeBytes": Int64(store.oplog.size_bytes),
                      "usedBytes": Int64(oplog.data_size), "entries": Int64(len(oplog))}}


_PARAMETERS = {"featureCompatibilityVersion": {"version": "7.0"},
               "authenticationMechanisms": ["SCRAM-SHA-1", "SCRAM-SHA-256"],
               "transactionLifetimeLimitSeconds": 60, "maxTransactionLockRequestTimeoutMillis": 5,
               "enableTestCommands": True, "logLevel": 0}


@command("getParameter")
def get_parameter(ctx: Ctx) -> dict:
    if ctx.cmd["getParameter"] == "*" or ctx.arg("allParameters"):
        return dict(_PARAMETERS)
    wanted = [k for k in ctx.cmd if k in _PARAMETERS]
    unknown = [k for k in ctx.cmd if k not in _PARAMETERS and k not in
               ("getParameter", "$db", "lsid", "$clusterTime", "$readPreference", "comment")]
    if unknown and not wanted:
        raise CommandError(INVALID_OPTIONS, "no option found to get")
    return {k: _PARAMETERS[k] for k in wanted}


@command("getCmdLineOpts")
def get_cmd_line_opts(ctx: Ctx) -> dict:
    server = ctx.server
    size_mb = server.store.oplog.size_bytes / (1024 * 1024)
    return {"argv": ["mongod", "--replSet", server.set_name, "--port", str(server.port),
                     "--bind_ip", server.host],
            "parsed": {"net": {"bindIp": server.host, "port": server.port},
                       "replication": {"replSet": server.set_name, "oplogSizeMB": size_mb}}}


@command("getDefaultRWConcern")
def get_default_rw_concern(ctx: Ctx) -> dict:
    return {"defaultReadConcern": {"level": "local"},
            "defaultWriteConcern": {"w": "majority", "wtimeout": 0},
            "defaultWriteConcernSource": "implicit", "defaultReadConcernSource": "implicit"}


@command("endSessions", "killAllSessions", "killSessions", "refreshSessions")
def end_sessions(ctx: Ctx) -> dict:
    if ctx.name == "killAllSessions":
        ctx.store.sessions.abort_all()
        return {}
    for lsid in ctx.cmd.get(ctx.name) or []:
        if isinstance(lsid, dict) and ctx.name != "refreshSessions":
            ctx.store.sessions.end(lsid.get("id"))
    return {}


@command("startSession")
def start_session(ctx: Ctx) -> dict:
    import uuid
    return {"id": {"id": uuid.uuid4()}, "timeoutMinutes": 30}


@command("connectionStatus", locked=False)
def connection_status(ctx: Ctx) -> dict:
    return {"authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []}}


@command("whatsmyuri", locked=False)
def whatsmyuri(ctx: Ctx) -> dict:
    return {"you": ctx.conn.peer}


@command("getLog", locked=False)
def get_log(ctx: Ctx) -> dict:
    if ctx.cmd["getLog"] == "*":
        return {"names": ["global", "startupWarnings"]}
    return {"totalLinesWritten": 0, "log": []}


@command("hostInfo", locked=False)
def host_info(ctx: Ctx) -> dict:
    return {"system": {"currentTime": _now(), "hostname": socket.gethostname(),
                       "cpuAddrSize": 64, "memSizeMB": Int64(1024), "numCores": os.cpu_count(),
                       "cpuArch": platform.machine(), "numaEnabled": False},
            "os": {"type": platform.system(), "name": platform.system(), "version": ""},
            "extra": {}}


@command("listCommands", locked=False)
def list_commands(ctx: Ctx) -> dict:
    from backupflows.sandbox.commands import COMMANDS
    return {"commands": {name: {"help": "", "requiresAuth": False, "secondaryOk": True,
                                "adminOnly": False} for name in sorted(COMMANDS)}}


@command("logout", "saslStart", "authenticate")
def auth(ctx: Ctx) -> dict:
    if ctx.name == "logout":
        return {}
    raise CommandError(18, "Authentication failed: the sandbox runs without users",
                       "AuthenticationFailed")


# -- transactions --------------------------------------------------------

@command("commitTransaction", write=True)
def commit_transaction(ctx: Ctx) -> dict:
    write = ctx.write
    txn = ctx.store.sessions.find(write.lsid_id, write.txn_number)
    if txn.state == "aborted":
        from backupflows.sandbox.sessions import no_such_transaction
        raise no_such_transaction(write.txn_number, "aborted")
    if txn.state == "in progress":
        ctx.store.commit(txn)
    return {}


@command("abortTransaction", write=True)
def abort_transaction(ctx: Ctx) -> dict:
    write = ctx.write
    txn = ctx.store.sessions.find(write.lsid_id, write.txn_number)
    if txn.state == "committed":
        raise CommandError(256, "Cannot abort a committed transaction",
                           "TransactionCommitted")
    if txn.state == "in progress":
        ctx.store.sessions.rollback(txn)
    return {}


# -- fault injection -------------------------------------------------------

def _admin_only(ctx: Ctx) -> None:
    if ctx.db != "admin":
        raise CommandError(13, f"{ctx.name} may only be run against the admin database.",
                           "Unauthorized")


@command("configureFailPoint", locked=False)
def configure_fail_point(ctx: Ctx) -> dict:
    _admin_only(ctx)
    if ctx.cmd["configureFailPoint"] != "failCommand":
        raise CommandError(BAD_VALUE, f"Cannot find failpoint {ctx.cmd['configureFailPoint']}"
                           " (the sandbox implements failCommand only)")
    count = ctx.server.faults.configure(ctx.arg("mode"), ctx.arg("data"))
    return {"count": count}


@command("sandboxCloseConnections", locked=False)
def sandbox_close_connections(ctx: Ctx) -> dict:
    _admin_only(ctx)
    ctx.after.append(ctx.server.close_all_connections)
    return {"closing": ctx.server.connection_count()}


@command("sandboxSetLatency", locked=False)
def sandbox_set_latency(ctx: Ctx) -> dict:
    _admin_only(ctx)
    ms = ctx.arg("ms", 0)
    if isinstance(ms, bool) or not isinstance(ms, int | float) or ms < 0:
        raise CommandError(BAD_VALUE, "'ms' must be a non-negative number")
    ctx.server.set_latency(ms)
    return {"ms": ms}


@command("sandboxTruncateOplog")
def sandbox_truncate_oplog(ctx: Ctx) -> dict:
    _admin_only(ctx)
    before = ctx.arg("before")
    if not isinstance(before, Timestamp):
        raise CommandError(BAD_VALUE, "'before' must be a Timestamp")
    removed = ctx.store.oplog.truncate_before(ts_value(before.time, before.inc))
    return {"removed": removed}
