"""Restores into a target MongoDB (a second sandbox over TCP): collections
with their options, documents byte for byte, indexes; a non-empty target is
refused before anything is written; --drop replaces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bson
import pymongo
import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from backupflows.errors import RestoreError
from backupflows.restore import service
from tests.restore.expect import expected_view
from tests.restore.world import World

pytestmark = [pytest.mark.timeout(180), pytest.mark.sandbox_only]
RAW = CodecOptions(document_class=RawBSONDocument)
DECODE = CodecOptions(document_class=dict, tz_aware=False)


def target_view(client: pymongo.MongoClient, skip: tuple[str, ...] = ("admin", "local",
                                                                        "config")
                ) -> dict[str, dict[str, Any]]:
    """A target's user namespaces, read back through pymongo (documents raw,
    in _id order; index specs as listIndexes gives them)."""
    out: dict[str, dict[str, Any]] = {}
    for db_name in client.list_database_names():
        if db_name in skip:
            continue
        db = client.get_database(db_name, codec_options=RAW)
        for raw_info in db.list_collections():
            info = bson.decode(raw_info.raw, DECODE) if hasattr(raw_info, "raw") \
                else dict(raw_info)
            name = info["name"]
            if name.startswith("system."):
                continue
            if info.get("type") == "view":
                out[f"{db_name}.{name}"] = {"type": "view", "docs": [], "indexes": [],
                                            "options": info.get("options", {})}
                continue
            coll = db[name]
            docs = [d.raw for d in coll.find({}, sort=[("_id", 1)])]
            indexes = [bson.decode(i.raw, DECODE) if hasattr(i, "raw") else dict(i)
                       for i in coll.list_indexes()]
            out[f"{db_name}.{name}"] = {"type": "collection", "docs": docs,
                                        "indexes": indexes, "options": info.get("options", {})}
    return out


def _key_names(indexes: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    return sorted((i["name"], list(i["key"].items())) for i in indexes)


def assert_target_equals(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]
                         ) -> None:
    assert sorted(got) == sorted(want)
    for ns, w in want.items():
        g = got[ns]
        assert g["type"] == w["type"], ns
        assert g["docs"] == w["docs"], f"{ns}: documents differ"
        assert _key_names(g["indexes"]) == _key_names(w["indexes"]), ns
        for spec in w["indexes"]:  # every option of every index spec, in order
            match = next(i for i in g["indexes"] if i["name"] == spec["name"])
            assert [(k, v) for k, v in match.items() if k in spec] == list(spec.items()), ns
        assert _contains(g["options"], w["options"]), f"{ns}: {g['options']} {w['options']}"


def _contains(got: Any, want: Any) -> bool:
    """``want`` with every field in ``got`` (a server fills in defaults, e.g. of a collation)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _contains(got[k], v)
                                             for k, v in want.items())
    return bool(got == want)


def _run(w: World, **kw: Any) -> dict[str, Any]:
    req = service.request(w.storage, deployment=w.name, **kw)
    return service.run(w.storage, req.id, "test")


def test_point_in_time_into_a_target_equals_the_source(
        history: World, make_sandbox: Callable[..., Any]) -> None:
    target = make_sandbox()
    ts = sorted(history.states)[-3]
    out = _run(history, at=f"{ts >> 32}:{ts & 0xFFFFFFFF}",
               destination={"kind": "uri", "uri": target.uri})
    assert out["state"] == "done", out["error"]
    with pymongo.MongoClient(target.uri) as client:
        assert_target_equals(target_view(client), expected_view(history.states[ts]))
    assert out["result"]["documents"] == sum(len(s.docs) for s in history.states[ts].values())


def test_collection_options_and_views_reach_the_target(
        history: World, make_sandbox: Callable[..., Any]) -> None:
    """Capped, validator, collation and a view, created through the oplog."""
    from tests.oplog.helpers import Op, uuid

    op = Op(seconds=(history.position >> 32) + 1)
    entries = [
        op.entry("c", "opts.$cmd", {"create": "capped", "capped": True, "size": 1 << 20},
                 ui=uuid(901)),
        op.entry("c", "opts.$cmd", {"create": "valid", "validator": {"n": {"$gte": 0}},
                                    "validationLevel": "moderate"}, ui=uuid(902)),
        op.entry("c", "opts.$cmd", {"create": "fr", "collation": {"locale": "fr"}},
                 ui=uuid(903)),
        op.entry("c", "opts.$cmd", {"create": "v", "viewOn": "valid",
                                    "pipeline": [{"$match": {"n": 1}}]}),
        op.i("opts.capped", {"_id": 1, "n": 1}, ui=uuid(901)),
        op.i("opts.valid", {"_id": 1, "n": -5}, ui=uuid(902)),  # fails the validator
        op.i("opts.fr", {"_id": "é", "n": 2}, ui=uuid(903)),
    ]
    history.apply(entries, record_every=len(entries))
    history.snapshot()
    target = make_sandbox()
    out = _run(history, at=f"{history.position >> 32}:{history.position & 0xFFFFFFFF}",
               destination={"kind": "uri", "uri": target.uri},
               selection={"include": ["opts"]})
    assert out["state"] == "done", out["error"]
    with pymongo.MongoClient(target.uri) as client:
        got = target_view(client)
        state = {ns: st for ns, st in history.states[history.position].items()
                 if ns.startswith("opts.")}
        assert_target_equals(got, expected_view(state))
        assert got["opts.capped"]["options"]["capped"] is True
        assert got["opts.fr"]["options"]["collation"]["locale"] == "fr"
        assert got["opts.v"]["options"]["viewOn"] == "valid"


def test_a_non_empty_target_is_refused_before_anything_is_written_and_drop_replaces(
        history: World, make_sandbox: Callable[..., Any]) -> None:
    target = make_sandbox()
    sid, ts = next(iter(history.snapshots.items()))
    state = expected_view(history.states[ts])
    busy = sorted(ns for ns, v in state.items() if v["docs"])[-1]
    db, _, name = busy.partition(".")
    with pymongo.MongoClient(target.uri) as client:
        client[db][name].insert_one({"_id": "already here"})
        req = service.request(history.storage, deployment=history.name, snapshot_id=sid,
                              destination={"kind": "uri", "uri": target.uri})
        with pytest.raises(RestoreError, match=f"already holds data in {busy}"):
            service.run(history.storage, req.id, "test")
        assert target_view(client) == {busy: target_view(client)[busy]}  # nothing else
        assert [d.raw for d in client.get_database(db, codec_options=RAW)[name].find()] == \
            [bson.encode({"_id": "already here"})]
        out = _run(history, snapshot_id=sid,
                   destination={"kind": "uri", "uri": target.uri, "drop": True})
        assert out["state"] == "done", out["error"]
        assert_target_equals(target_view(client), state)


def test_target_password_is_never_shown(history: World) -> None:
    uri = "mongodb://restorer:s3cr3tpw@127.0.0.1:1/?serverSelectionTimeoutMS=300"
    req = service.request(history.storage, deployment=history.name, snapshot_id=1,
                          destination={"kind": "uri", "uri": uri})
    queued = service.describe(history.storage, req.id)
    assert "s3cr3tpw" not in str(queued) and "restorer:***@" in str(queued)
    with pytest.raises(RestoreError) as err:
        service.run(history.storage, req.id, "test")
    assert "s3cr3tpw" not in str(err.value)
    failed = service.describe(history.storage, req.id)
    assert failed["state"] == "failed" and "s3cr3tpw" not in str(failed)
    from backupflows.catalog.restore_models import Restore

    with history.storage.reading() as s:  # the finished row keeps no password at rest
        assert "s3cr3tpw" not in s.get(Restore, req.id).destination["uri"]
