"""Namespace filters and the listing of what a backup copies."""

from __future__ import annotations

import bson
import pymongo
import pytest

from backupflows.errors import ConfigError, SourceError
from backupflows.source.namespaces import (
    NamespaceFilter,
    NamespaceFilterError,
    is_internal,
    list_namespaces,
    unmatched_includes,
)


@pytest.mark.parametrize("entry, says", [
    ("", "expected db or db.collection"),
    ("   ", "expected db or db.collection"),
    (".coll", "is not a database name"),
    ("my db", "is not a database name"),
    ("a/b", "is not a database name"),
    ("x" * 64, "is not a database name"),
    ("db.", "is not a collection name"),
    ("db.co$ll", "is not a collection name"),
    ("local", "internal namespace"),
    ("local.oplog.rs", "internal namespace"),
    ("config.system.sessions", "internal namespace"),
    ("config.transactions", "internal namespace"),
    ("admin.system.version", "internal namespace"),
])
def test_bad_filter_entries_are_refused_with_a_reason(entry: str, says: str) -> None:
    for kwargs in ({"include": [entry]}, {"exclude": [entry]}):
        with pytest.raises(NamespaceFilterError, match=says) as exc:
            NamespaceFilter(**kwargs)
        assert isinstance(exc.value, ConfigError) and isinstance(exc.value, SourceError)
        assert repr(entry) in str(exc.value)


def test_a_string_is_not_a_list_of_entries() -> None:
    with pytest.raises(NamespaceFilterError, match="must be a list"):
        NamespaceFilter(include="shop")  # type: ignore[arg-type]


def test_include_exclude_rules() -> None:
    f = NamespaceFilter(include=["shop", "crm.people", " logs.app.events "],
                        exclude=["shop.tmp", "crm"])
    assert f.include == ("shop", "crm.people", "logs.app.events")
    assert f.matches_ns("shop.orders") and f.matches_ns("shop.orders.archive")
    assert not f.matches_ns("shop.tmp")                 # exclude wins
    assert not f.matches_ns("crm.people")               # whole db excluded
    assert f.matches_ns("logs.app.events") and not f.matches_ns("logs.app")
    assert not f.matches_ns("other.c")
    assert f.matches_db("shop") and f.matches_db("logs") and not f.matches_db("crm")
    assert not f.matches_db("other")


def test_everything_by_default_but_never_internals() -> None:
    f = NamespaceFilter()
    assert f.is_everything
    for ns in ("shop.orders", "admin.system.users", "admin.system.roles", "admin.mine",
               "config.chunks", "db.system.js"):
        assert f.matches_ns(ns), ns
    for ns in ("local.oplog.rs", "local.startup_log", "config.system.sessions",
               "config.transactions", "config.cache.chunks.db.c", "config.image_collection",
               "config.system.preimages", "config.system.indexBuilds", "admin.system.version",
               "admin.system.keys", "db.system.profile"):
        assert not f.matches_ns(ns) and is_internal(ns), ns
    assert not f.matches_db("local")


def test_views_and_time_series_buckets_follow_their_database_and_view() -> None:
    f = NamespaceFilter(include=["db.weather"])
    assert f.matches_ns("db.system.buckets.weather")
    assert not f.matches_ns("db.system.buckets.other")
    assert f.matches_ns("db.system.views")              # view definitions of an included db
    assert not NamespaceFilter(include=["x"]).matches_ns("db.system.views")


@pytest.fixture
def populated(mongo_client: pymongo.MongoClient):
    shop = mongo_client["bf_shop"]
    shop.create_collection("orders", validator={"qty": {"$gte": 0}})
    shop.orders.insert_many([{"_id": i, "qty": i} for i in range(25)])
    shop.orders.create_index([("qty", -1)], name="qty_desc")
    shop.create_collection("capped", capped=True, size=1 << 20)
    shop.command("create", "big_orders", viewOn="orders", pipeline=[{"$match": {"qty": {
        "$gt": 10}}}])
    mongo_client["bf_crm"].people.insert_one({"_id": "ann"})
    mongo_client["bf_crm"]["system.profile"].insert_one({"_id": 1})
    yield mongo_client
    for db in ("bf_shop", "bf_crm"):
        mongo_client.drop_database(db)


def test_listing_describes_collections_raw(populated, source) -> None:
    infos = list_namespaces(source, NamespaceFilter(include=["bf_shop", "bf_crm"]))
    assert [i.ns for i in infos] == ["bf_crm.people", "bf_shop.big_orders", "bf_shop.capped",
                                     "bf_shop.orders"]
    by_ns = {i.ns: i for i in infos}
    listed = {c["name"]: c for c in populated["bf_shop"].list_collections()}
    orders = by_ns["bf_shop.orders"]
    assert orders.type == "collection" and orders.count == 25 and orders.size > 0
    assert orders.uuid == bytes(listed["orders"]["info"]["uuid"])
    assert bson.decode(orders.options) == listed["orders"]["options"]
    assert [bson.decode(s)["name"] for s in orders.indexes] == ["_id_", "qty_desc"]
    assert bson.decode(orders.indexes[1])["key"] == {"qty": -1}
    assert bson.decode(orders.id_index)["key"] == {"_id": 1}
    view = by_ns["bf_shop.big_orders"]
    assert view.type == "view" and view.indexes == [] and view.uuid is None
    assert bson.decode(view.options)["viewOn"] == "orders"
    assert bson.decode(by_ns["bf_shop.capped"].options)["capped"] is True


@pytest.mark.sandbox_only
def test_internal_namespaces_are_never_listed(populated, source) -> None:
    populated.config.transactions.insert_one({"_id": 1})
    populated.config.chunks.insert_one({"_id": 1})
    populated.admin["system.version"].insert_one({"_id": "x"})
    populated.admin["system.users"].insert_one({"_id": "admin.backup"})
    names = {i.ns for i in list_namespaces(source, NamespaceFilter())}
    assert {"bf_crm.people", "config.chunks", "admin.system.users"} <= names
    assert not any(n.startswith("local.") for n in names)
    assert not names & {"config.transactions", "admin.system.version", "bf_crm.system.profile"}


def test_filter_excluding_one_collection(populated, source) -> None:
    infos = list_namespaces(source, NamespaceFilter(include=["bf_shop"],
                                                    exclude=["bf_shop.capped"]))
    assert [i.coll for i in infos] == ["big_orders", "orders"]


def test_filter_that_matches_nothing_is_an_error(populated, source) -> None:
    with pytest.raises(NamespaceFilterError) as exc:
        list_namespaces(source, NamespaceFilter(include=["bf_shopp", "bf_crm.nobody"]))
    text = str(exc.value)
    assert "matches nothing" in text and "include bf_shopp, bf_crm.nobody" in text
    assert "bf_shop" in text   # names what is there


def test_unmatched_include_entries_are_reported(populated, source) -> None:
    f = NamespaceFilter(include=["bf_shop.orders", "bf_shop.typo", "bf_nothing"])
    infos = list_namespaces(source, f)
    assert [i.ns for i in infos] == ["bf_shop.orders"]
    assert unmatched_includes(f, infos) == ["bf_shop.typo", "bf_nothing"]


@pytest.mark.sandbox_only
def test_empty_source_without_filter_lists_nothing(source) -> None:
    assert list_namespaces(source, NamespaceFilter()) == []
