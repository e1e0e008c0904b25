"""Metadata files: mongodump 100.x's exact JSON text, and older variants read."""

from __future__ import annotations

import datetime
import re
import uuid
from pathlib import Path

import pytest
from bson import json_util
from bson.binary import Binary
from bson.code import Code
from bson.codec_options import DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.json_util import JSONOptions
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from backupflows.mongodump import CollectionMeta, DumpFormatError
from backupflows.mongodump.extjson import dumps, format_double, quote
from tests.mongodump.helpers import TESTDATA

ALL_METADATA = sorted(TESTDATA.rglob("*.metadata.json"))
# Written by mongodump 100.x versions that add "type": the text must come back
# byte for byte. The others are older writers (see test_older_writers_*).
CURRENT = [p for p in ALL_METADATA if '"type":' in p.read_text()]


def load(path: Path) -> CollectionMeta:
    return CollectionMeta.from_json(path.read_bytes(), path.parent.name,
                                    path.name.removesuffix(".metadata.json"), str(path))


def test_fixtures_are_found() -> None:
    assert len(ALL_METADATA) == 11 and len(CURRENT) == 8


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: str(p.relative_to(TESTDATA)))
def test_read_then_write_gives_mongodumps_text_byte_for_byte(path: Path) -> None:
    assert load(path).to_json().encode() == path.read_bytes()


def test_ttl_index_and_uuid_of_collmod_fixture() -> None:
    meta = load(TESTDATA / "collMod_ttl_index/mongodump_test_db/coll1.metadata.json")
    assert (meta.db, meta.name, meta.type) == ("mongodump_test_db", "coll1", "collection")
    assert meta.uuid == bytes.fromhex("ffa7054f30dc422696fa9607e150cb53")
    assert meta.options == {}
    a_1 = meta.indexes[1]
    assert list(a_1) == ["v", "key", "name", "expireAfterSeconds"]
    assert a_1["name"] == "a_1" and a_1["expireAfterSeconds"] == 1000


def test_timeseries_fixture_keeps_option_order_and_names_its_buckets() -> None:
    meta = load(TESTDATA / "timeseries_tests/ts_dump_with_oplog/timeseries_test/"
                           "foo_ts.metadata.json")
    assert meta.type == "timeseries" and meta.uuid is None
    assert list(meta.options["timeseries"]) == [
        "bucketMaxSpanSeconds", "timeField", "metaField", "granularity"]
    assert meta.data_name == "system.buckets.foo_ts"
    assert [i["name"] for i in meta.indexes] == ["meta.device_1", "ts_1_meta.device_1"]


def test_older_writers_legacy_relaxed_json_of_mongodump_3x() -> None:
    """oplogdump's metadata (relaxed JSON, ``ns`` in index specs, no name or
    type) is read; written back it takes the current layout, so the text
    differs: ``options`` (empty) is omitted, numbers become canonical and
    ``collectionName``/``type`` are added, exactly as mongodump 100.x writes."""
    meta = load(TESTDATA / "oplogdump/db1/c1.metadata.json")
    assert (meta.name, meta.type, meta.options) == ("c1", "collection", {})
    assert meta.indexes == [{"v": 2, "key": {"_id": 1}, "name": "_id_", "ns": "db1.c1"}]
    assert meta.uuid == bytes.fromhex("699f503df64b4aa8a484a8052046fa3a")
    assert meta.to_json() == (
        '{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_",'
        '"ns":"db1.c1"}],"uuid":"699f503df64b4aa8a484a8052046fa3a","collectionName":"c1",'
        '"type":"collection"}')


def test_older_writers_100x_without_type() -> None:
    """Early 100.x omitted ``type``: the only difference in what we write."""
    path = TESTDATA / "duplicate_index_key_with_oplog/test/foo.metadata.json"
    text = path.read_text()
    assert load(path).to_json() == text[:-1] + ',"type":"collection"}'
    assert load(path).indexes[1]["key"] == {"a": 1.0}  # a double stays a double


def test_view_has_empty_indexes_no_uuid_and_options_first() -> None:
    meta = CollectionMeta("db", "v", "view", {"viewOn": "c", "pipeline": [{"$match": {}}]})
    assert not meta.has_data
    assert meta.to_json() == ('{"options":{"viewOn":"c","pipeline":[{"$match":{}}]},'
                              '"indexes":[],"collectionName":"v","type":"view"}')


def test_type_inferred_from_options_when_absent() -> None:
    view = CollectionMeta.from_json('{"options":{"viewOn":"c","pipeline":[]},"indexes":[]}',
                                    "d", "v")
    ts = CollectionMeta.from_json('{"options":{"timeseries":{"timeField":"t"}},"indexes":[]}',
                                  "d", "t")
    assert (view.type, ts.type) == ("view", "timeseries")


def test_collection_name_field_wins_over_file_name() -> None:
    meta = CollectionMeta.from_json('{"indexes":[],"collectionName":"real"}', "d", "trunc")
    assert meta.name == "real"


@pytest.mark.parametrize("text, message", [
    ('{"indexes":[', "bad JSON at offset 12"),
    ("[1, 2]", "the metadata must be a JSON object"),
    ('{"indexes":{}}', "indexes must be a JSON array"),
    ('{"indexes":[],"uuid":"xyz"}', "uuid must be 32 hex digits"),
    ('{"indexes":[],"type":"table"}', "unknown collection type"),
    ('{"indexes":[3]}', "an index spec must be a JSON object"),
    (b'{"indexes":[],"collectionName":"\xff"}', "not UTF-8 at offset 32"),
])
def test_bad_metadata_is_a_clear_error_naming_the_file(text: str | bytes, message: str) -> None:
    with pytest.raises(DumpFormatError, match=re.escape(message)) as err:
        CollectionMeta.from_json(text, "d", "c", source="/dump/d/c.metadata.json")
    assert str(err.value).startswith("/dump/d/c.metadata.json: ")


def test_missing_name_is_an_error() -> None:
    with pytest.raises(DumpFormatError, match="no collection name"):
        CollectionMeta.from_json('{"indexes":[]}', "d", None)


# -- Extended JSON as the Go driver writes it --------------------------------

@pytest.mark.parametrize("value, text", [
    (1.0, "1.0"), (0.5, "0.5"), (-2.25, "-2.25"), (100000.0, "100000.0"),
    (1e6, "1E+06"), (1234567.0, "1.234567E+06"), (0.0001, "0.0001"), (1e-05, "1E-05"),
    (1.5e-07, "1.5E-07"), (1e21, "1E+21"), (2.5e100, "2.5E+100"), (1e-300, "1E-300"),
    (0.1, "0.1"), (1 / 3, "0.3333333333333333"), (0.0, "0.0"), (-0.0, "-0.0"),
    (float("inf"), "Infinity"), (float("-inf"), "-Infinity"), (float("nan"), "NaN"),
])
def test_doubles_are_formatted_like_go_strconv_G(value: float, text: str) -> None:
    assert format_double(value) == text


def test_strings_escape_like_go_without_html_escaping() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
    assert quote("\n\r\t\b\f\x01\x1f") == '"\\n\\r\\t\\b\\f\\u0001\\u001f"'
    assert quote("<&>é中\u2028\u2029\x7f") == '"<&>é中\\u2028\\u2029\x7f"'


def test_every_bson_type_in_canonical_form() -> None:
    oid = ObjectId("60350ac1415a2fc63f3195ab")
    doc = {
        "i": 1, "big": 2**40, "l": Int64(3), "d": 2.0, "s": "x", "t": True, "n": None,
        "o": oid, "dec": Decimal128("1.10"), "bin": Binary(b"\x01\x02", 0x80),
        "u": uuid.UUID(int=1), "by": b"\xff",
        "date": DatetimeMS(-5), "dt": datetime.datetime(1970, 1, 1, 0, 0, 1),
        "ts": Timestamp(5, 7), "re": Regex("^a", "xmi"), "pat": re.compile("b", re.I),
        "min": MinKey(), "max": MaxKey(), "c": Code("f()"), "cs": Code("g()", {"a": 1}),
        "ref": DBRef("coll", 5), "arr": [], "obj": {},
    }
    assert dumps(doc) == (
        '{"i":{"$numberInt":"1"},"big":{"$numberLong":"1099511627776"},'
        '"l":{"$numberLong":"3"},"d":{"$numberDouble":"2.0"},"s":"x","t":true,"n":null,'
        '"o":{"$oid":"60350ac1415a2fc63f3195ab"},"dec":{"$numberDecimal":"1.10"},'
        '"bin":{"$binary":{"base64":"AQI=","subType":"80"}},'
        '"u":{"$binary":{"base64":"AAAAAAAAAAAAAAAAAAAAAQ==","subType":"04"}},'
        '"by":{"$binary":{"base64":"/w==","subType":"00"}},'
        '"date":{"$date":{"$numberLong":"-5"}},"dt":{"$date":{"$numberLong":"1000"}},'
        '"ts":{"$timestamp":{"t":5,"i":7}},'
        '"re":{"$regularExpression":{"pattern":"^a","options":"imx"}},'
        '"pat":{"$regularExpression":{"pattern":"b","options":"iu"}},'
        '"min":{"$minKey":1},"max":{"$maxKey":1},"c":{"$code":"f()"},'
        '"cs":{"$code":"g()","$scope":{"a":{"$numberInt":"1"}}},'
        '"ref":{"$ref":"coll","$id":{"$numberInt":"5"}},"arr":[],"obj":{}}')


def test_written_json_reads_back_to_the_same_values_with_pymongo() -> None:
    """Independent check that the text is valid canonical Extended JSON."""
    options = {"validator": {"$and": [{"a": {"$gt": Decimal128("1.5")}},
                                      {"d": {"$lt": DatetimeMS(1700000000000)}}]},
               "capped": True, "size": Int64(4096), "max": 10, "ratio": 0.25,
               "collation": {"locale": "fr", "strength": 2}}
    meta = CollectionMeta("db", "c", options=options, uuid=uuid.uuid4().bytes,
                          indexes=[{"v": 2, "key": {"x": -1.0}, "name": "x_-1"}])
    parsed = json_util.loads(meta.to_json(), json_options=JSONOptions(
        datetime_conversion=DatetimeConversion.DATETIME_MS))
    assert parsed["options"] == options and parsed["indexes"] == meta.indexes
    assert isinstance(parsed["options"]["size"], Int64)
    assert CollectionMeta.from_json(meta.to_json(), "db") == meta


def test_integer_outside_int64_is_refused() -> None:
    with pytest.raises(ValueError, match="int64"):
        dumps({"x": 2**64})
