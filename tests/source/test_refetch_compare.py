"""Refetching documents by _id and comparing a head's ids/content with the source."""

from __future__ import annotations

import itertools

import bson
import pytest
from bson import Decimal128, Int64, ObjectId

from backupflows.bsonorder import id_key, raw_id, value_key
from backupflows.contenthash import ContentHash
from backupflows.source.client import RAW
from backupflows.source.compare import (
    ONLY_IN_HEAD,
    ONLY_IN_SOURCE,
    DocRef,
    collection_summary,
    diff_head,
    diff_ids,
    doc_ref,
    scan_ids,
    source_ids,
    split_diff,
)
from backupflows.source.refetch import fetch_by_ids, in_filter
from tests.source.conftest import FAST


def _rid(value) -> bytes:
    return bson.encode({"_id": value})


@pytest.fixture
def coll(mongo_client, unique_db):
    c = mongo_client[unique_db].c
    c.insert_many([{"_id": v, "n": i} for i, v in enumerate(
        [5, "five", ObjectId("0123456789ab0123456789ab"), {"k": [1, 2]}, 7.5, None, True])])
    return c


def _raw_docs(coll) -> list[bytes]:
    return [d.raw for d in coll.with_options(codec_options=RAW).find().sort("_id", 1)]


def test_refetch_finds_present_ids_of_every_type_and_reports_missing(coll, source):
    asked = [_rid("five"), _rid(ObjectId("0123456789ab0123456789ab")), _rid("absent"),
             _rid({"k": [1, 2]}), _rid(None), _rid(True), _rid({"k": [2, 1]})]
    got = list(fetch_by_ids(source, coll.full_name, asked, batch_size=3))
    assert [a for a, _ in got] == asked
    found = {a: d for a, d in got}
    assert found[_rid("absent")] is None and found[_rid({"k": [2, 1]})] is None
    by_id = {id_key(d): d for d in _raw_docs(coll)}
    for a, d in got:
        if d is not None:
            assert d == by_id[id_key(a)]          # the stored bytes, not a re-encoding


def test_refetch_uses_the_servers_numeric_equality(coll, source):
    asked = [_rid(Int64(5)), _rid(5.0), _rid(Decimal128("7.50")), _rid(6)]
    got = dict(fetch_by_ids(source, coll.full_name, asked))
    assert bson.decode(got[_rid(Int64(5))])["n"] == 0 and got[_rid(5.0)] is not None
    assert bson.decode(got[_rid(Decimal128("7.50"))])["_id"] == 7.5
    assert got[_rid(6)] is None


def test_in_filter_is_built_from_raw_values(coll):
    f = in_filter([_rid(Int64(1)), _rid("x")])
    assert bson.decode(f.raw) == {"_id": {"$in": [Int64(1), "x"]}}
    with pytest.raises(ValueError):
        in_filter([bson.encode({"x": 1})])


def test_refetch_of_many_ids_in_batches(mongo_client, unique_db, source):
    c = mongo_client[unique_db].many
    c.insert_many([{"_id": i} for i in range(0, 2000, 2)])
    got = list(fetch_by_ids(source, c.full_name, (_rid(i) for i in range(1200)), batch_size=97))
    assert len(got) == 1200
    assert [bson.decode(a)["_id"] for a, d in got if d is not None] == list(range(0, 1200, 2))


def test_summary_counts_and_hashes_the_raw_documents(coll, source):
    s = collection_summary(source, coll.full_name)
    raw = _raw_docs(coll)
    assert s.count == len(raw) == 7
    assert s.hexdigest == ContentHash.of(raw).hexdigest()
    coll.update_one({"_id": 5}, {"$set": {"n": 99}})
    assert collection_summary(source, coll.full_name).hexdigest != s.hexdigest
    assert collection_summary(source, coll.database.name + ".nothing").count == 0


def test_scan_ids_in_id_order_with_or_without_digests(coll, source):
    raw = _raw_docs(coll)
    full = list(scan_ids(source, coll.full_name))
    assert full == [doc_ref(d) for d in raw]
    light = list(scan_ids(source, coll.full_name, with_digest=False))
    assert [(r.key, r.raw_id, r.digest) for r in light] == [
        (id_key(d), raw_id(d), None) for d in raw]


def test_diff_finds_ids_on_one_side_and_changed_documents(coll, source):
    head_docs = {id_key(d): d for d in _raw_docs(coll)}
    head_docs.pop(value_key("five"))                           # head lacks a document
    extra = bson.encode({"_id": "zzz-deleted-at-source"})
    head_docs[id_key(extra)] = extra                           # head keeps a deleted one
    changed = bson.encode({"_id": 5, "n": -1})
    head_docs[id_key(changed)] = changed                       # head has an old version
    head = [doc_ref(head_docs[k]) for k in sorted(head_docs)]
    only_head, only_source, diff_changed = split_diff(diff_ids(head, scan_ids(source,
                                                                              coll.full_name)))
    assert [d.raw_id for d in only_head] == [raw_id(extra)]
    assert [d.raw_id for d in only_source] == [_rid("five")]
    assert [d.raw_id for d in diff_changed] == [_rid(5)]
    # repair by refetching what differs: found -> upsert, None -> delete
    fixes = dict(fetch_by_ids(source, coll.full_name,
                              [d.raw_id for d in only_head + only_source + diff_changed]))
    for rid, doc in fixes.items():
        if doc is None:
            head_docs.pop(id_key(rid))
        else:
            head_docs[id_key(doc)] = doc
    repaired = [doc_ref(head_docs[k]) for k in sorted(head_docs)]
    assert list(diff_ids(repaired, scan_ids(source, coll.full_name))) == []


def test_diff_head_compares_id_sets_of_head_documents_and_the_source(coll, source):
    head_docs = {id_key(d): d for d in _raw_docs(coll)}
    head_docs.pop(value_key("five"))                           # head lacks a document
    extra = bson.encode({"x": 1, "_id": "zzz-deleted-at-source"})  # _id not first
    head_docs[id_key(extra)] = extra                           # head keeps a deleted one
    head_docs[value_key(5)] = bson.encode({"_id": 5, "n": -1})  # other content: same _id
    head_docs[value_key(7.5)] = bson.encode({"n": 4, "_id": 7.5})  # same _id, not first
    head_docs.pop(value_key(True))                             # head has 1, not true:
    head_docs[value_key(Decimal128("1"))] = bson.encode({"_id": Decimal128("1")})
    head = [(k, head_docs[k]) for k in sorted(head_docs)]
    ids = list(source_ids(source, coll.full_name))
    assert ids == [raw_id(d) for d in _raw_docs(coll)]
    got = [(d.side, d.key, d.raw_id) for d in diff_head(head, ids)]
    assert sorted(got) == sorted([
        (ONLY_IN_SOURCE, value_key("five"), _rid("five")),
        (ONLY_IN_SOURCE, value_key(True), _rid(True)),
        (ONLY_IN_HEAD, value_key(Decimal128("1")), _rid(Decimal128("1"))),
        (ONLY_IN_HEAD, id_key(extra), _rid("zzz-deleted-at-source"))])
    assert [d.side for d in diff_head(head[:2], ids[3:])] == [ONLY_IN_HEAD] * 2 + [
        ONLY_IN_SOURCE] * (len(ids) - 3)
    with pytest.raises(ValueError, match="source stream is not sorted"):
        list(diff_head([], ids[::-1]))
    with pytest.raises(ValueError, match="head stream is not sorted"):
        list(diff_head(head[::-1], ids))


def test_diff_head_matches_numerically_equal_ids_of_other_types() -> None:
    head = [(value_key(Int64(5)), bson.encode({"_id": Int64(5), "a": 1}))]
    assert list(diff_head(head, [_rid(5)])) == []              # the server's _id equality
    assert list(diff_head(head, [_rid(5.0)])) == []
    assert [d.side for d in diff_head(head, [_rid(6)])] == [ONLY_IN_HEAD, ONLY_IN_SOURCE]


def test_source_ids_of_a_large_collection_stream_in_order(mongo_client, unique_db, source):
    c = mongo_client[unique_db].many
    c.insert_many([{"_id": i, "p": "w" * 100} for i in range(5000)])
    ids = source_ids(source, c.full_name)
    assert [bson.decode(r)["_id"] for r in itertools.islice(ids, 3000)] == list(range(3000))
    ids.close()                                                # stops the reading thread
    assert [d.key for d in diff_head([], source_ids(source, c.full_name))] == [
        value_key(i) for i in range(5000)]


def test_diff_without_digests_compares_ids_only() -> None:
    a = [(value_key(i), _rid(i)) for i in range(5)]      # (key, raw_id) pairs are enough
    b = [DocRef(value_key(i), _rid(i), 123) for i in range(1, 6)]
    sides = [(d.side, bson.decode(d.raw_id)["_id"]) for d in diff_ids(a, b)]
    assert sides == [(ONLY_IN_HEAD, 0), (ONLY_IN_SOURCE, 5)]


def test_diff_streams_without_reading_everything() -> None:
    """Infinite sorted streams: the differences come out one by one."""
    def evens():
        for i in itertools.count(0, 2):
            yield DocRef(value_key(i), _rid(i))

    def threes():
        for i in itertools.count(0, 3):
            yield DocRef(value_key(i), _rid(i))

    first = list(itertools.islice(diff_ids(evens(), threes()), 4))
    assert [(d.side, bson.decode(d.raw_id)["_id"]) for d in first] == [
        (ONLY_IN_HEAD, 2), (ONLY_IN_SOURCE, 3), (ONLY_IN_HEAD, 4), (ONLY_IN_HEAD, 8)]


def test_diff_refuses_unsorted_streams() -> None:
    a = [DocRef(value_key(i), _rid(i)) for i in (1, 3, 2)]
    with pytest.raises(ValueError, match="head stream is not sorted"):
        list(diff_ids(a, []))


@pytest.mark.sandbox_only
def test_refetch_and_scans_survive_dropped_connections(sandbox, mongo_client, unique_db,
                                                       source):
    c = mongo_client[unique_db].big
    c.insert_many([{"_id": i, "p": "w" * 400} for i in range(3000)])
    expected = collection_summary(source, c.full_name)
    sandbox.fail_commands(["find", "getMore"], times=2, close_connection=True)
    assert collection_summary(source, c.full_name) == expected
    assert sandbox.faults.times_entered == 2
    sandbox.fail_commands(["find"], error_code=11602, times=3)      # more than pymongo's 1 retry
    got = list(fetch_by_ids(source, c.full_name, [_rid(i) for i in range(0, 3000, 7)],
                            backoff=FAST))
    assert all(d is not None for _, d in got) and len(got) == 429
    assert sandbox.faults.times_entered == 3
