"""Selection and renaming: mongorestore's pattern semantics (the vectors of
mongo-tools' mongorestore/ns/ns_test.go), our additions (a bare db, users
and roles, time-series buckets), and the items a selection plans."""

from __future__ import annotations

import bson
import pytest

from backupflows.contenthash import ContentHash
from backupflows.errors import RestoreError
from backupflows.restore.plan import Namespace, plan
from backupflows.restore.select import Matcher, Renamer, Selection


def test_renamer_vectors_of_mongo_tools() -> None:
    r = Renamer(["$db$.user$$", r"pr\*d\\.*"], ["test.user$$_$db$", r"st\*g\\ing.*"])
    assert r.get("stuff.user") == "test.user_stuff"
    assert r.get("stuff.users") == "test.users_stuff"
    assert r.get(r"pr*d\.users") == r"st*g\ing.users"
    assert r.get(r"pr*d\.turbo.encabulators") == r"st*g\ing.turbo.encabulators"
    assert r.get(r"st*g\ing.turbo.encabulators") == r"st*g\ing.turbo.encabulators"
    r = Renamer(["$:)*$.us(?:2)er$?$"], ["test.us(?:2)er$?$_$:)*$"])
    assert r.get("stuff.us(?:2)er") == "test.us(?:2)er_stuff"
    assert r.get("stuff.us(?:2)ers") == "test.us(?:2)ers_stuff"
    r = Renamer(["*.*"], ["*_test.*"])
    assert r.get("stuff.user") == "stuff_test.user"
    assert r.get("prod.turbo.encabulators") == "prod_test.turbo.encabulators"
    r = Renamer(["restaurants.cafés", "ÿœz.tāx"], ["ÿœp.tāx", "yes.tax"])
    assert r.get("restaurants.cafés") == "ÿœp.tāx" and r.get("ÿœz.tāx") == "yes.tax"


@pytest.mark.parametrize(("sources", "targets"), [
    (["$db$.user$db$"], ["test.user-$db$"]),          # a variable used twice
    (["$db$.us$er$table$"], ["test.user$table$_$db$"]),  # odd dollars
    (["a.*"], ["b.c"]),                                # wildcard counts differ
    (["a.$x$"], ["b.$y$"]),                            # unknown variable
    (["a.b"], []),                                     # not in pairs
])
def test_bad_renamings_are_refused(sources: list[str], targets: list[str]) -> None:
    with pytest.raises(RestoreError):
        Renamer(sources, targets)


def test_last_renaming_pair_wins() -> None:
    r = Renamer(["shop.*", "shop.orders"], ["a.*", "b.orders"])
    assert r.get("shop.orders") == "b.orders" and r.get("shop.items") == "a.items"
    r = Renamer(["shop.orders", "shop.*"], ["b.orders", "a.*"])
    assert r.get("shop.orders") == "a.orders"


def test_matcher_vectors_of_mongo_tools() -> None:
    m = Matcher(["*.user*", r"pr\*d\.*"])
    assert m.has("stuff.user") and m.has("stuff.users")
    assert m.has("pr*d.users") and m.has("pr*d.magic") and m.has("pr*d.turbo.encabulators")
    assert not m.has(r"pr*d\.magic") and not m.has("prod.magic")
    assert not m.has("st*ging.turbo.encabulators")
    m = Matcher(["*.*"])
    assert not m.has("stuff") and m.has("stuff.user") and m.has("prod.turbo.encabulators")
    assert Matcher(["*"]).has("test.\n")
    for bad in ("$.user$", "*.user$", ""):
        with pytest.raises(RestoreError):
            Matcher([bad])


def test_a_bare_database_means_all_its_collections() -> None:
    m = Matcher(["shop"])
    assert m.has("shop.orders") and m.has("shop.a.b")
    assert not m.has("shopping.orders") and not m.has("ops.shop")


def test_selection_include_exclude_users_and_profile() -> None:
    sel = Selection(include=["shop", "admin.*"], exclude=["shop.tmp*"])
    assert sel.matches_ns("shop.orders") and not sel.matches_ns("shop.tmp_1")
    assert not sel.matches_ns("ops.metrics")
    assert not sel.matches_ns("admin.system.users") and not sel.matches_ns("admin.system.roles")
    assert sel.matches_ns("admin.settings")
    assert not Selection().matches_ns("shop.system.profile")
    everything = Selection(include_users=True)
    assert everything.matches_ns("admin.system.users") and everything.matches_ns("a.b")


def test_time_series_buckets_follow_their_collection() -> None:
    sel = Selection(include=["iot.readings"])
    assert sel.matches_ns("iot.system.buckets.readings")
    assert not sel.matches_ns("iot.system.buckets.other")


def test_selection_json_round_trip_and_errors() -> None:
    sel = Selection.from_json({"include": "shop", "ns_from": ["a.*"], "ns_to": ["b.*"]})
    assert sel.include == ["shop"] and Selection.from_json(sel.to_json()).to_json() == \
        sel.to_json()
    with pytest.raises(RestoreError, match="unknown selection"):
        Selection.from_json({"includes": ["x"]})
    with pytest.raises(RestoreError, match="list of strings"):
        Selection.from_json({"include": [1]})
    with pytest.raises(RestoreError, match="not db.collection"):
        Selection(ns_from=["a.b"], ns_to=["nodot"]).rename("a", "b")


def _ns(db: str, name: str, type_: str = "collection", docs: list[bytes] | None = None,
        options: dict | None = None) -> Namespace:
    docs = docs or []
    h = ContentHash.of(docs)
    return Namespace(db, name, type_, None, bson.encode(options or {}),
                     [bson.encode({"v": 2, "key": {"_id": 1}, "name": "_id_"})],
                     h.count, h.hexdigest(), lambda: iter(docs))


def test_plan_selects_renames_and_keeps_buckets_with_their_time_series() -> None:
    bucket = bson.encode({"_id": 1, "control": {}})
    spaces = [
        _ns("shop", "orders", docs=[bson.encode({"_id": 1})]),
        _ns("shop", "v", "view", options={"viewOn": "orders", "pipeline": []}),
        _ns("iot", "readings", "timeseries", options={"viewOn": "system.buckets.readings"}),
        _ns("iot", "system.buckets.readings", docs=[bucket],
            options={"timeseries": {"timeField": "t"}, "expireAfterSeconds": 60,
                     "validator": {}}),
        _ns("admin", "system.users", docs=[bson.encode({"_id": "admin.u"})]),
    ]
    items = plan(spaces, Selection(ns_from=["shop.*", "iot.*"], ns_to=["copy.*", "iot2.*"]))
    assert [i.ns for i in items] == ["copy.orders", "copy.v", "iot2.readings"]
    ts = items[2]
    assert ts.meta.type == "timeseries" and ts.meta.data_name == "system.buckets.readings"
    assert ts.meta.options == {"timeseries": {"timeField": "t"}, "expireAfterSeconds": 60}
    assert list(ts.documents()) == [bucket] and ts.expected is not None \
        and ts.expected.count == 1
    assert items[1].meta.type == "view" and items[1].expected is None
    assert [i.ns for i in plan(spaces, Selection(include_users=True))][0] == "admin.system.users"
    with pytest.raises(RestoreError, match="sends both"):
        plan(spaces, Selection(ns_from=["shop.orders", "shop.v"], ns_to=["x.y", "x.y"]))
