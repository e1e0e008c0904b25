"""The namespace filter applied to a real oplog: writes of every kind through
pymongo to the sandbox (CRUD, DDL, renames in and out of the copied set, a
transaction touching copied and excluded collections, dropDatabase), the
sandbox's oplog filtered and applied to an empty head: the head holds
exactly the copied namespaces, each equal to the source, document by
document (raw bytes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from backupflows.head.store import HeadStore
from backupflows.jobs.entryfilter import filter_entries
from backupflows.oplog.applier import Applier
from backupflows.source.namespaces import NamespaceFilter

RAW = CodecOptions(document_class=RawBSONDocument)


def _writes(client: pymongo.MongoClient) -> None:
    keep, skip, other = client.keep, client.skip, client.other
    keep.a.insert_many([{"_id": i, "v": i} for i in range(20)])
    keep.secret.insert_many([{"_id": i} for i in range(5)])  # excluded by name
    skip.x.insert_many([{"_id": i} for i in range(5)])  # excluded database
    other.y.insert_one({"_id": 1})  # not included
    keep.a.update_many({"v": {"$lt": 5}}, {"$set": {"w": 1}})
    keep.a.delete_one({"_id": 19})
    keep.a.create_index("v")
    keep.secret.create_index("v")
    keep.b.insert_many([{"_id": i} for i in range(3)])
    keep.b.rename("secret_b")  # out of the copied set: a drop for the head
    keep.c.insert_many([{"_id": i} for i in range(3)])
    keep.c.rename("c2")  # within the copied set
    keep.a.update_one({"_id": 3}, {"$set": {"moved": True}})
    with client.start_session() as session, session.start_transaction():
        keep.a.insert_one({"_id": 100}, session=session)
        keep.secret.insert_one({"_id": 100}, session=session)
        skip.x.insert_one({"_id": 100}, session=session)
    with client.start_session() as session, session.start_transaction():
        skip.x.insert_one({"_id": 101}, session=session)  # nothing of it is copied
    client.drop_database("skip")
    keep.d.insert_one({"_id": 1})
    keep.d.drop()


def _source_state(client: pymongo.MongoClient, filt: NamespaceFilter) -> dict[str, list[bytes]]:
    out = {}
    for db in client.list_database_names():
        for name in client[db].list_collection_names():
            ns = f"{db}.{name}"
            if filt.matches_ns(ns) and not name.startswith("system."):
                coll = client.get_database(db, codec_options=RAW)[name]
                out[ns] = [d.raw for d in coll.find().sort("_id", 1)]
    return out


def test_filtered_oplog_builds_exactly_the_copied_namespaces(tmp_path: Path,
                                                             mongo_client: Any) -> None:
    start = mongo_client.local["oplog.rs"].find_one(sort=[("$natural", -1)])["ts"]
    _writes(mongo_client)
    filt = NamespaceFilter(["keep"], ["keep.secret", "keep.secret_b"])
    raw_oplog = mongo_client.get_database("local", codec_options=RAW)["oplog.rs"]
    entries = [e.raw for e in raw_oplog.find({"ts": {"$gt": start}})]
    with HeadStore(tmp_path / "h.head") as head:
        Applier(head).apply(filter_entries(entries, filt), batch_size=7)
        ours = {c.ns: list(head.export(c)) for c in head.collections() if c.holds_documents}
        indexes = {c.ns: len(head.indexes(c)) for c in head.collections()}
    theirs = _source_state(mongo_client, filt)
    assert set(ours) == set(theirs) == {"keep.a", "keep.c2"}
    assert ours == theirs
    assert indexes["keep.a"] == 2  # _id and v
    assert [d for d in ours["keep.a"] if b"moved" in d]


def test_everything_filter_passes_entries_through_untouched() -> None:
    entries = [b"not even parsed"]
    assert list(filter_entries(entries, NamespaceFilter())) == entries
