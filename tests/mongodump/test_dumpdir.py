"""Dump directories: the fixtures read, round trips, gzip, skips, corruption."""

from __future__ import annotations

import gzip
import os
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import bson
import pytest

from backupflows.mongodump import CollectionMeta, DumpFormatError, DumpReader, DumpWriter
from tests.mongodump.helpers import TESTDATA, random_documents

FIXTURE_DUMPS = ["oplogdump", "collMod_ttl_index", "duplicate_index_key_with_oplog",
                 "timeseries_tests/ts_dump_with_oplog"]


def names(reader: DumpReader) -> list[str]:
    return [ns.namespace for ns in reader]


# -- the real dumps of mongo-tools -------------------------------------------

def test_oplogdump_fixture() -> None:
    reader = DumpReader(TESTDATA / "oplogdump")
    assert names(reader) == ["admin.system.version", "db1.c1"]
    c1 = reader.get("db1", "c1")
    docs = list(c1.documents(validate=True))
    assert len(docs) == 5
    assert b"".join(docs) == (TESTDATA / "oplogdump/db1/c1.bson").read_bytes()
    assert reader.oplog_path == TESTDATA / "oplogdump/oplog.bson"
    assert len(list(reader.oplog())) == 3
    assert reader.skipped == []


def test_collmod_fixture_has_ttl_index_a_1() -> None:
    coll = DumpReader(TESTDATA / "collMod_ttl_index").get("mongodump_test_db", "coll1")
    assert len(list(coll.documents())) == 10
    assert coll.meta is not None
    assert [i["name"] for i in coll.meta.indexes] == ["_id_", "a_1"]


def test_duplicate_index_key_fixture() -> None:
    foo = DumpReader(TESTDATA / "duplicate_index_key_with_oplog").get("test", "foo")
    ids = [bson.decode(d)["_id"] for d in foo.documents()]
    assert len(ids) == 2 and foo.meta is not None and foo.meta.indexes[1]["unique"] is True


def test_timeseries_fixture_pairs_view_metadata_with_bucket_file() -> None:
    reader = DumpReader(TESTDATA / "timeseries_tests/ts_dump_with_oplog")
    ts = reader.get("timeseries_test", "foo_ts")
    assert ts.meta is not None and ts.meta.type == "timeseries"
    assert ts.bson_path is not None and ts.bson_path.name == "system.buckets.foo_ts.bson"
    assert ts.data_name == "system.buckets.foo_ts"
    buckets = [bson.decode(d) for d in ts.documents(validate=True)]
    assert len(buckets) == 10 and all("control" in b for b in buckets)
    assert len(list(reader.oplog())) == 872
    assert "timeseries_test.system.buckets.foo_ts" not in names(reader)


@pytest.mark.parametrize("fixture", FIXTURE_DUMPS)
@pytest.mark.parametrize("compressed", [False, True])
def test_fixture_copied_through_writer_reads_back_identically(
        fixture: str, compressed: bool, tmp_path: Path) -> None:
    source = DumpReader(TESTDATA / fixture)
    writer = DumpWriter(tmp_path / "out", gzip=compressed)
    for ns in source:
        assert ns.meta is not None
        writer.write_collection(ns.meta, ns.documents())
    copy = DumpReader(tmp_path / "out")
    assert names(copy) == names(source)
    for a, b in zip(source, copy, strict=True):
        assert a.meta == b.meta
        assert list(a.documents()) == list(b.documents())
        suffix = ".gz" if compressed else ""
        assert b.metadata_path is not None and b.metadata_path.name.endswith(
            ".metadata.json" + suffix)
        text = gzip.decompress(b.metadata_path.read_bytes()) if compressed \
            else b.metadata_path.read_bytes()
        assert a.meta is not None and text == a.meta.to_json().encode()


# -- round trips ---------------------------------------------------------------

ODD_NAMES = ["a/b c", "é中", "semi;colon?", "x" * 300, "y" * 300, "%24 not hashed", "$dollar"]


@pytest.mark.parametrize("compressed", [False, True])
def test_round_trip_raw_bytes_identical_with_odd_names(compressed: bool,
                                                       tmp_path: Path) -> None:
    writer = DumpWriter(tmp_path, gzip=compressed)
    expected = {}
    for i, name in enumerate(ODD_NAMES):
        meta = CollectionMeta("db", name, options={"capped": True, "size": 4096},
                              indexes=[{"v": 2, "key": {"_id": 1}, "name": "_id_"}],
                              uuid=bytes([i]) * 16)
        docs = random_documents(i, 50 + i)
        assert writer.write_collection(meta, iter(docs)) == len(docs)
        expected[name] = (meta, docs)
    reader = DumpReader(tmp_path)
    assert sorted(ns.name for ns in reader) == sorted(ODD_NAMES)
    for ns in reader:
        meta, docs = expected[ns.name]
        assert ns.meta == meta and list(ns.documents(validate=True)) == docs
    files = {p.name for p in (tmp_path / "db").iterdir()}
    assert ("a%2Fb%20c.bson" + (".gz" if compressed else "")) in files
    assert all(len(f) <= 255 and "/" not in f for f in files)


def test_view_has_only_metadata_and_timeseries_writes_buckets(tmp_path: Path) -> None:
    writer = DumpWriter(tmp_path)
    view = CollectionMeta("db", "v", "view", {"viewOn": "c", "pipeline": []})
    ts = CollectionMeta("db", "t", "timeseries", {"timeseries": {"timeField": "ts"}})
    assert writer.write_collection(view) == 0
    writer.write_collection(ts, random_documents(1, 3))
    assert sorted(p.name for p in (tmp_path / "db").iterdir()) == [
        "system.buckets.t.bson", "t.metadata.json", "v.metadata.json"]
    reader = DumpReader(tmp_path)
    assert reader.get("db", "v").bson_path is None
    assert list(reader.get("db", "v").documents()) == []
    assert len(list(reader.get("db", "t").documents())) == 3
    with pytest.raises(DumpFormatError, match="is a view"):
        writer.write_collection(view, random_documents(1, 1))


def test_empty_collection_gets_an_empty_bson_file(tmp_path: Path) -> None:
    DumpWriter(tmp_path).write_collection(CollectionMeta("db", "empty"))
    assert (tmp_path / "db/empty.bson").read_bytes() == b""
    assert list(DumpReader(tmp_path).get("db", "empty").documents()) == []


def test_gzip_files_are_plain_gzip_and_oplog_keeps_its_name(tmp_path: Path) -> None:
    docs = random_documents(7, 20)
    writer = DumpWriter(tmp_path, gzip=True)
    writer.write_collection(CollectionMeta("db", "c"), docs)
    writer.write_oplog(docs[:3])
    assert gzip.decompress((tmp_path / "db/c.bson.gz").read_bytes()) == b"".join(docs)
    assert gzip.decompress((tmp_path / "oplog.bson").read_bytes()) == b"".join(docs[:3])
    assert list(DumpReader(tmp_path).oplog()) == docs[:3]


def test_gzip_choice_like_mongorestore(tmp_path: Path) -> None:
    DumpWriter(tmp_path, gzip=True).write_collection(CollectionMeta("db", "z"), [])
    DumpWriter(tmp_path).write_collection(CollectionMeta("db", "p"), [])
    assert names(DumpReader(tmp_path)) == ["db.p", "db.z"]
    only_gz = DumpReader(tmp_path, gzip=True)
    assert names(only_gz) == ["db.z"]
    assert {s.reason for s in only_gz.skipped} == {"uncompressed file, gzip=True"}
    assert names(DumpReader(tmp_path, gzip=False)) == ["db.p"]
    DumpWriter(tmp_path, gzip=True).write_collection(CollectionMeta("db", "p"), [])
    with pytest.raises(DumpFormatError, match="both p.bson and p.bson.gz"):
        DumpReader(tmp_path)


def test_what_mongorestore_skips_is_skipped_and_reported(tmp_path: Path) -> None:
    writer = DumpWriter(tmp_path)
    for name in ["keep", "system.profile", "system.indexes"]:
        writer.write_collection(CollectionMeta("db", name), random_documents(0, 1))
    (tmp_path / "db/system.indexes.metadata.json").unlink()
    (tmp_path / "db/$admin.system.users.bson").write_bytes(random_documents(0, 1)[0])
    (tmp_path / "db/nested").mkdir()
    (tmp_path / "db/notes.txt").write_text("hi")
    (tmp_path / "db/.tmp-0123").write_bytes(b"partial")
    (tmp_path / "prelude.json").write_text("{}")
    (tmp_path / "nometa").mkdir()
    (tmp_path / "nometa/raw.bson").write_bytes(b"".join(random_documents(3, 4)))
    reader = DumpReader(tmp_path)
    assert names(reader) == ["db.keep", "nometa.raw"]
    assert reader.get("nometa", "raw").meta is None
    assert len(list(reader.get("nometa", "raw").documents())) == 4
    skipped = {s.path.relative_to(tmp_path).as_posix(): s.reason for s in reader.skipped}
    assert skipped == {
        "db/system.profile.metadata.json": "system.profile is never restored",
        "db/system.profile.bson": "system.profile is never restored",
        "db/system.indexes.bson": "indexes are restored from the .metadata.json files",
        "db/$admin.system.users.bson": "special file of a single-database dump",
        "db/nested": "subdirectory of a database directory",
        "db/notes.txt": "not a .bson or .metadata.json file",
        "db/.tmp-0123": "not a .bson or .metadata.json file",
        "prelude.json": "not a database directory or oplog.bson",
    }


def test_truncated_long_name_comes_from_metadata(tmp_path: Path) -> None:
    name = "n/" * 200
    DumpWriter(tmp_path).write_collection(CollectionMeta("db", name), random_documents(2, 2))
    (bson_file,) = (tmp_path / "db").glob("*.bson")
    assert "%24" in bson_file.name and len(bson_file.stem) == 238
    assert DumpReader(tmp_path).get("db", name).bson_path == bson_file
    (tmp_path / "db" / (bson_file.stem + ".metadata.json")).unlink()
    with pytest.raises(DumpFormatError, match="truncated file name"):
        DumpReader(tmp_path)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DumpFormatError, match="not a dump directory"):
        DumpReader(tmp_path / "missing")


# -- atomic writes ---------------------------------------------------------

def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path: Path) -> None:
    writer = DumpWriter(tmp_path)
    meta = CollectionMeta("db", "c")
    writer.write_collection(meta, random_documents(1, 5))
    before = (tmp_path / "db/c.bson").read_bytes()

    def failing() -> Iterator[bytes]:
        yield from random_documents(2, 3)
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError):
        writer.write_collection(meta, failing())
    assert (tmp_path / "db/c.bson").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "db").iterdir()) == ["c.bson", "c.metadata.json"]


def test_writer_refuses_unframed_documents(tmp_path: Path) -> None:
    good = random_documents(1, 1)[0]
    for bad in [b"", good[:-1], good[:-1] + b"\x01", struct.pack("<i", 99) + good[4:]]:
        with pytest.raises(DumpFormatError, match="document 1 of db.c"):
            DumpWriter(tmp_path).write_collection(CollectionMeta("db", "c"), [good, bad])
    assert not (tmp_path / "db/c.bson").exists()


# -- corrupt input -----------------------------------------------------------

def corrupt_dump(tmp_path: Path, data: bytes, compressed: bool = False) -> DumpReader:
    DumpWriter(tmp_path, gzip=compressed).write_collection(CollectionMeta("db", "c"), [])
    path = tmp_path / ("db/c.bson.gz" if compressed else "db/c.bson")
    path.write_bytes(gzip.compress(data) if compressed else data)
    return DumpReader(tmp_path)


def read_all(reader: DumpReader, validate: bool = False) -> int:
    return sum(1 for _ in reader.get("db", "c").documents(validate=validate))


@pytest.mark.parametrize("compressed", [False, True])
def test_truncated_document_names_file_and_offset(compressed: bool, tmp_path: Path) -> None:
    docs = random_documents(4, 3)
    data = b"".join(docs)
    reader = corrupt_dump(tmp_path, data[:-7], compressed)
    with pytest.raises(DumpFormatError) as err:
        read_all(reader)
    message = str(err.value)
    assert "c.bson" in message and f"offset {len(docs[0]) + len(docs[1])}" in message
    assert "truncated document" in message


def test_every_truncation_point_is_detected(tmp_path: Path) -> None:
    data = b"".join(random_documents(5, 3))
    boundaries = _boundaries(data)
    for cut in range(1, len(data)):
        reader = corrupt_dump(tmp_path, data[:cut])
        if cut in boundaries:
            assert read_all(reader) == boundaries.index(cut) + 1
        else:
            with pytest.raises(DumpFormatError, match="offset"):
                read_all(reader)


def _boundaries(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(data):
        pos += struct.unpack_from("<i", data, pos)[0]
        out.append(pos)
    return out


def test_length_that_lies(tmp_path: Path) -> None:
    docs = random_documents(6, 2)
    assert docs[1][0] != 0
    longer = struct.pack("<i", len(docs[0]) + 1) + docs[0][4:] + docs[1]
    with pytest.raises(DumpFormatError, match="offset 0: document of length .* does not end"):
        read_all(corrupt_dump(tmp_path, longer))
    shorter = struct.pack("<i", len(docs[0]) - 1) + docs[0][4:] + docs[1]
    with pytest.raises(DumpFormatError, match=r"c\.bson: offset \d+: "):
        read_all(corrupt_dump(tmp_path, shorter))
    # a lie that lands on a zero byte by chance is caught at the next document
    lands_on_zero = struct.pack("<i", len(docs[0]) + 3) + docs[0][4:] + docs[1]
    with pytest.raises(DumpFormatError, match=f"offset {len(docs[0]) + 3}: .* not a valid"):
        read_all(corrupt_dump(tmp_path, lands_on_zero))
    huge = struct.pack("<i", 2**30) + docs[0][4:]
    with pytest.raises(DumpFormatError, match="offset 0: 1073741824 is not a valid BSON"):
        read_all(corrupt_dump(tmp_path, huge))


def test_validate_catches_a_lying_length_that_lands_on_a_zero_byte(tmp_path: Path) -> None:
    inner = bson.encode({"a": {"b": 1}, "c": "x"})
    end_of_a = inner.index(b"\x00\x02c") + 1  # just past the nested document
    lying = struct.pack("<i", end_of_a) + inner[4:end_of_a]
    reader = corrupt_dump(tmp_path, lying)
    assert read_all(reader) == 1  # framing alone cannot tell
    with pytest.raises(DumpFormatError, match="offset 0: invalid BSON document"):
        read_all(reader, validate=True)


def test_corrupt_gzip_is_a_clear_error(tmp_path: Path) -> None:
    reader = corrupt_dump(tmp_path, b"".join(random_documents(8, 50)), compressed=True)
    path = tmp_path / "db/c.bson.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DumpFormatError, match="c.bson.gz"):
        read_all(reader)


def test_bad_metadata_json_names_the_file(tmp_path: Path) -> None:
    DumpWriter(tmp_path).write_collection(CollectionMeta("db", "c"), [])
    (tmp_path / "db/c.metadata.json").write_text('{"indexes":[}')
    with pytest.raises(DumpFormatError, match=r"db/c\.metadata\.json: bad JSON at offset 12"):
        DumpReader(tmp_path)


def test_unreadable_bson_file_is_a_clear_error(tmp_path: Path) -> None:
    reader = corrupt_dump(tmp_path, b"")
    os.remove(tmp_path / "db/c.bson")
    with pytest.raises(DumpFormatError, match="cannot open"):
        read_all(reader)


# -- streaming ---------------------------------------------------------------

def test_memory_does_not_grow_with_collection_size(tmp_path: Path) -> None:
    doc = bson.encode({"_id": 0, "pad": "p" * 1000})

    def many(n: int) -> Iterator[bytes]:
        for _ in range(n):
            yield doc

    tracemalloc.start()
    try:
        DumpWriter(tmp_path, fsync=False).write_collection(CollectionMeta("db", "c"), many(20000))
        count = sum(1 for _ in DumpReader(tmp_path).get("db", "c").documents())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 20000 and (tmp_path / "db/c.bson").stat().st_size > 20_000_000
    assert peak < 4_000_000, f"peak {peak} bytes for a 20 MB collection"

