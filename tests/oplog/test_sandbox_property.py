"""Property test against the sandbox: seeded random writes of every kind
(CRUD, DDL, views, transactions) through pymongo -> read the sandbox's
local.oplog.rs -> apply to an empty head -> the head equals the sandbox's
data collection by collection, document by document (raw bytes), index by
index; re-applying the oplog or suffixes of it changes nothing."""

from __future__ import annotations

import datetime
import random
from pathlib import Path
from typing import Any

import bson
import pymongo
import pytest
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from pymongo.errors import PyMongoError

from backupflows.bsonorder import id_key
from backupflows.head import rawdoc
from backupflows.head.store import HeadStore
from backupflows.oplog.applier import Applier
from tests.oplog.helpers import head_state

RAW = CodecOptions(document_class=RawBSONDocument)
DBS = ("pa", "pb")
NAMES = ("c1", "c2", "c3", "c4")


class Workload:
    """Random operations through pymongo; failures (duplicate keys, missing
    namespaces...) are part of the game: the server writes no oplog for them."""

    def __init__(self, client: pymongo.MongoClient, seed: int) -> None:
        self.client, self.rng = client, random.Random(seed)

    def coll(self) -> Any:
        return self.client[self.rng.choice(DBS)][self.rng.choice(NAMES)]

    def _id(self) -> Any:
        r, n = self.rng.random(), self.rng.randrange(40)
        if r < 0.4:
            return n
        if r < 0.5:
            return Int64(n)
        if r < 0.6:
            return float(n)
        if r < 0.75:
            return f"s{n}"
        if r < 0.85:
            return {"k": n % 3, "j": n}
        return ObjectId(n.to_bytes(12, "big"))

    def doc(self) -> dict[str, Any]:
        rng = self.rng
        return {"_id": self._id(), "a": rng.randrange(10), "b": "x" * rng.randrange(6),
                "arr": [rng.randrange(5) for _ in range(rng.randrange(4))],
                "sub": {"x": rng.randrange(3), "y": [1, {"z": 2}]},
                "when": datetime.datetime(2024, 1, 1 + rng.randrange(28))}

    def update(self) -> dict[str, Any]:
        rng = self.rng
        return rng.choice([
            {"$set": {"a": rng.randrange(10), "sub.x": rng.randrange(5)}},
            {"$inc": {"a": 1, "n": 2}},
            {"$unset": {"b": ""}},
            {"$push": {"arr": rng.randrange(9)}},
            {"$pull": {"arr": rng.randrange(5)}},
            {"$addToSet": {"tags": rng.choice("xyz")}},
            {"$rename": {"b": "bb"}},
            {"$set": {"sub.y.1.z": rng.randrange(9), "new.deep": 1}},
            {"$max": {"a": 5}, "$mul": {"n": 2}},
            {"$pop": {"arr": 1}},
        ])

    def crud(self, session: Any = None) -> None:
        rng, c, kw = self.rng, self.coll(), {"session": session}
        r = rng.random()
        if r < 0.25:
            c.insert_one(self.doc(), **kw)
        elif r < 0.32:
            c.insert_many([self.doc() for _ in range(3)], ordered=False, **kw)
        elif r < 0.55:
            c.update_one({"_id": self._id()}, self.update(), upsert=rng.random() < 0.2, **kw)
        elif r < 0.62:
            c.update_many({"a": {"$lt": rng.randrange(10)}}, {"$inc": {"a": 1}}, **kw)
        elif r < 0.7:
            c.replace_one({"_id": self._id()}, {"r": rng.randrange(9)}, **kw)
        elif r < 0.8:
            c.delete_one({"_id": self._id()}, **kw)
        elif r < 0.84:
            c.delete_many({"a": rng.randrange(10)}, **kw)
        elif r < 0.92:
            c.find_one_and_update({"a": {"$gte": 0}}, self.update(), **kw)
        else:
            c.find_one_and_delete({"a": rng.randrange(10)}, **kw)

    def ddl(self) -> None:
        rng, c = self.rng, self.coll()
        db = c.database
        r = rng.random()
        if r < 0.2:
            field = rng.choice(["a", "b", "sub.x", "arr"])
            opts: dict[str, Any] = rng.choice([
                {}, {"unique": True}, {"sparse": True}, {"expireAfterSeconds": 100},
                {"hidden": True}, {"partialFilterExpression": {"a": {"$gt": 2}}},
                {"collation": {"locale": "fr"}}])
            c.create_index([(field, rng.choice([1, -1]))], **opts)
        elif r < 0.3:
            names = [i["name"] for i in c.list_indexes() if i["name"] != "_id_"]
            if names:
                c.drop_index(rng.choice(names))
        elif r < 0.42:
            names = [i["name"] for i in c.list_indexes() if i["name"] != "_id_"]
            if names:
                index: dict[str, Any] = {"name": rng.choice(names)}
                index.update(rng.choice([{"expireAfterSeconds": rng.randrange(50)},
                                         {"hidden": rng.random() < 0.5}]))
                db.command("collMod", c.name, index=index)
        elif r < 0.5:
            db.command("collMod", c.name, validator={"a": {"$gte": 0}},
                       validationLevel=rng.choice(["moderate", "strict"]),
                       validationAction=rng.choice(["warn", "error"]))
        elif r < 0.6:
            db.create_collection(c.name, **rng.choice([
                {}, {"validator": {"b": {"$type": "string"}}},
                {"capped": True, "size": 1 << 20}, {"collation": {"locale": "de"}}]))
        elif r < 0.7:
            c.drop()
        elif r < 0.85:
            target = self.client[rng.choice(DBS)][rng.choice(NAMES)]
            self.client.admin.command("renameCollection", c.full_name, to=target.full_name,
                                      dropTarget=rng.random() < 0.5)
        elif r < 0.93:
            db.create_collection(f"v{rng.randrange(3)}", viewOn=c.name,
                                 pipeline=[{"$match": {"a": {"$gt": rng.randrange(5)}}}])
        elif r < 0.99:
            db.drop_collection(f"v{rng.randrange(3)}")
        else:
            self.client.drop_database(db.name)

    def transaction(self) -> None:
        with self.client.start_session() as session:
            session.start_transaction()
            try:
                for _ in range(self.rng.randrange(1, 6)):
                    self.crud(session)
            except PyMongoError:
                session.abort_transaction()
                return
            if self.rng.random() < 0.2:
                session.abort_transaction()
            else:
                session.commit_transaction()

    def run(self, steps: int) -> None:
        for db in DBS:
            for name in NAMES[:2]:
                self.client[db].create_collection(name)
        for _ in range(steps):
            r = self.rng.random()
            try:
                if r < 0.78:
                    self.crud()
                elif r < 0.9:
                    self.ddl()
                else:
                    self.transaction()
            except PyMongoError:
                pass


def sandbox_state(client: pymongo.MongoClient) -> dict[str, Any]:
    """What the head must hold: per namespace type, UUID, options, indexes,
    documents by _id key (all raw)."""
    state: dict[str, Any] = {}
    for dbname in client.list_database_names():
        if dbname in ("admin", "config", "local"):
            continue
        db = client.get_database(dbname, codec_options=RAW)
        for info in _first_batch(db, "listCollections", 1):
            name, kind = info["name"], info["type"]
            options = rawdoc.subdocument(info.raw, b"options") or rawdoc.EMPTY
            if kind == "view":
                state[f"{dbname}.{name}"] = {"type": "view", "options": options}
                continue
            coll = db[name]
            docs = sorted((id_key(d.raw), d.raw) for d in coll.find())
            if name == "system.views":
                state[f"{dbname}.{name}"] = {"view docs": [raw for _, raw in docs]}
                continue
            state[f"{dbname}.{name}"] = {
                "type": kind, "uuid": bytes(info["info"]["uuid"]), "options": options,
                "indexes": [i.raw for i in _first_batch(db, "listIndexes", name)],
                "docs": docs}
    return state


def _first_batch(db: Any, command: str, arg: Any) -> list[RawBSONDocument]:
    reply = db.command(command, arg, codec_options=RAW)
    cursor = reply["cursor"]
    assert cursor["id"] == 0, "more than one batch"
    return list(cursor["firstBatch"])


def head_as_sandbox(head: HeadStore) -> dict[str, Any]:
    state: dict[str, Any] = {}
    views: dict[str, list[tuple[bytes, bytes]]] = {}
    for c in head.collections():
        if c.type == "view":
            state[c.ns] = {"type": "view", "options": c.options}
            doc = rawdoc.build([rawdoc.element("_id", c.ns)]
                               + [e for _, e in rawdoc.elements_of(c.options)])
            views.setdefault(c.db, []).append((id_key(doc), doc))
            continue
        state[c.ns] = {"type": c.type, "uuid": c.uuid, "options": c.options,
                       "indexes": head.indexes(c), "docs": list(head.export_keyed(c))}
    for db, docs in views.items():
        state[f"{db}.system.views"] = {"view docs": [raw for _, raw in sorted(docs)]}
    return state


def _without_empty_view_catalogs(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if v != {"view docs": []}}


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_head_equals_sandbox(seed: int, mongo_client: pymongo.MongoClient,
                             tmp_path: Path) -> None:
    Workload(mongo_client, seed).run(steps=700)
    want = sandbox_state(mongo_client)
    oplog = [e.raw for e in mongo_client.local.get_collection("oplog.rs", RAW).find()]
    kinds = {bson.decode(e)["op"] for e in oplog}
    assert {"i", "u", "d", "c"} <= kinds
    with HeadStore(tmp_path / "h.db") as head:
        Applier(head).apply(oplog, batch_size=random.Random(seed).choice((1, 17, 500)))
        got = head_as_sandbox(head)
        assert _without_empty_view_catalogs(got) == _without_empty_view_catalogs(want)
        assert head.integrity_check() == []
        end = head_state(head)
        rng = random.Random(seed)
        for start in [0] + sorted(rng.sample(range(len(oplog)), 5)):
            Applier(head).apply(oplog[start:], batch_size=97)
            again = head_state(head)
            for ns, value in end.items():  # the missing set may grow (see idempotency)
                if isinstance(value, dict):
                    value.pop("missing", None)
                    again[ns].pop("missing", None)
            assert again == end, f"re-applying from {start}"
