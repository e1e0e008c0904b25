"""The archive format, checked by an independent parser written from the spec
(mongo-tools common/archive/spec.md) and by our reader."""

from __future__ import annotations

import gzip
import io
import random
import tracemalloc
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.int64 import Int64

from backupflows.mongodump import (
    ArchiveChecksumError,
    ArchiveReader,
    ArchiveWriter,
    CollectionMeta,
    DumpFormatError,
    DumpReader,
)
from backupflows.mongodump.crc64 import ACCELERATED, crc64_xz, crc64_xz_pure
from tests.mongodump.helpers import TESTDATA, random_documents

# -- an independent reader, from the spec alone ------------------------------

ECMA_182 = 0x42F0E1EBA9EA3693  # CRC-64 polynomial of ECMA-182, normal form
MASK64 = (1 << 64) - 1


def reflect64(value: int) -> int:
    return int(f"{value:064b}"[::-1], 2)


def spec_crc64(data: bytes) -> int:
    """Go's crc64.Checksum(data, MakeTable(ECMA)) bit by bit, as a signed int64."""
    poly, crc = reflect64(ECMA_182), MASK64
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    crc ^= MASK64
    return crc - (1 << 64) if crc >> 63 else crc


@dataclass
class Parsed:
    header: dict[str, Any]
    prelude: list[dict[str, Any]]
    documents: list[tuple[str, bytes]] = field(default_factory=list)
    blocks: list[tuple[str, int]] = field(default_factory=list)
    eof: dict[str, int] = field(default_factory=dict)
    header_keys: set[tuple[str, ...]] = field(default_factory=set)


def spec_parse(data: bytes) -> Parsed:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    assert data[:4] == bytes([0x6D, 0xE2, 0x99, 0x81])
    pos = 4

    def next_doc() -> bytes | None:
        nonlocal pos
        size = int.from_bytes(data[pos:pos + 4], "little", signed=True)
        if size == -1:
            pos += 4
            return None
        raw = data[pos:pos + size]
        assert len(raw) == size and raw[-1] == 0
        pos += size
        return raw

    head = next_doc()
    assert head is not None
    parsed = Parsed(bson.decode(head), [])
    while (entry := next_doc()) is not None:
        parsed.prelude.append(bson.decode(entry))
    while pos < len(data):
        raw_header = next_doc()
        assert raw_header is not None, "headerless block"
        header = bson.decode(raw_header)
        parsed.header_keys.add(tuple(header))
        assert type(header["CRC"]) is Int64
        ns = f"{header['db']}.{header['collection']}"
        bodies = []
        while (doc := next_doc()) is not None:
            bodies.append(doc)
        if header["EOF"]:
            assert not bodies and ns not in parsed.eof
            parsed.eof[ns] = header["CRC"]
        else:
            assert header["CRC"] == 0 and ns not in parsed.eof
            parsed.blocks.append((ns, len(bodies)))
            parsed.documents.extend((ns, d) for d in bodies)
    return parsed


def check_crcs(parsed: Parsed) -> None:
    per_ns: dict[str, list[bytes]] = defaultdict(list)
    for ns, doc in parsed.documents:
        per_ns[ns].append(doc)
    for ns, crc in parsed.eof.items():
        assert crc == spec_crc64(b"".join(per_ns[ns])), ns


# -- the CRC itself ----------------------------------------------------------

def test_crc64_is_go_ecma_check_value() -> None:
    check = 0x995DC9BBDF1939FA  # CRC-64/XZ ("123456789")
    assert crc64_xz(b"123456789") == crc64_xz_pure(b"123456789") == check
    assert spec_crc64(b"123456789") == check - (1 << 64)


def test_accelerated_and_pure_crc_agree_in_pieces() -> None:
    rng = random.Random(3)
    data = rng.randbytes(20000)
    cuts = sorted(rng.sample(range(1, len(data)), 7))
    value = pure = 0
    for a, b in zip([0, *cuts], [*cuts, len(data)]):
        value, pure = crc64_xz(data[a:b], value), crc64_xz_pure(data[a:b], pure)
    assert value == pure == crc64_xz_pure(data)
    print("fastcrc in use:", ACCELERATED)


# -- writing -------------------------------------------------------------------

COLL = CollectionMeta("shop", "orders", indexes=[{"v": 2, "key": {"_id": 1}, "name": "_id_"}],
                      uuid=bytes(range(16)))
OTHER = CollectionMeta("shop", "a/b é")
EMPTY = CollectionMeta("shop", "empty")
VIEW = CollectionMeta("shop", "v", "view", {"viewOn": "orders", "pipeline": []})
SERIES = CollectionMeta("metrics", "ts", "timeseries", {"timeseries": {"timeField": "t"}})


def write_sample(compressed: bool) -> tuple[bytes, list[tuple[str, bytes]]]:
    out = io.BytesIO()
    expected: list[tuple[str, bytes]] = []
    writer = ArchiveWriter(out, gzip=compressed, server_version="7.0.4", tool_version="t 1")
    for meta in (COLL, OTHER, EMPTY, VIEW, SERIES):
        writer.add_namespace(meta, size=123)
    writer.add_oplog()
    rng = random.Random(1)
    for round_ in range(6):
        for meta in rng.sample([COLL, OTHER, SERIES], 3):
            docs = random_documents(round_ * 10 + len(meta.name), rng.randrange(0, 5))
            writer.write_documents(meta, iter(docs))
            expected += [(f"{meta.db}.{meta.data_name}", d) for d in docs]
    writer.end_namespace(OTHER)
    writer.write_documents(("", "oplog"), random_documents(99, 2))
    expected += [(".oplog", d) for d in random_documents(99, 2)]
    writer.finish()
    return out.getvalue(), expected


@pytest.mark.parametrize("compressed", [False, True])
def test_independent_parser_reads_what_the_writer_writes(compressed: bool) -> None:
    data, expected = write_sample(compressed)
    assert (data[:2] == b"\x1f\x8b") is compressed
    parsed = spec_parse(data)
    assert parsed.header == {"concurrent_collections": 1, "version": "0.1",
                             "server_version": "7.0.4", "tool_version": "t 1"}
    assert [list(e) for e in parsed.prelude] == [["db", "collection", "metadata", "size",
                                                  "type"]] * 6
    assert [(e["db"], e["collection"], e["type"]) for e in parsed.prelude] == [
        ("shop", "orders", "collection"), ("shop", "a/b é", "collection"),
        ("shop", "empty", "collection"), ("shop", "v", "view"),
        ("metrics", "ts", "timeseries"), ("", "oplog", "")]
    assert parsed.prelude[0]["metadata"] == COLL.to_json()
    assert parsed.prelude[5]["metadata"] == "" and parsed.prelude[0]["size"] == 123
    assert parsed.header_keys == {("db", "collection", "EOF", "CRC")}
    assert parsed.documents == expected
    assert set(parsed.eof) == {"shop.orders", "shop.a/b é", "shop.empty", "shop.v",
                               "metrics.system.buckets.ts", ".oplog"}
    assert ("shop.empty", 0) in parsed.blocks and ("shop.v", 0) in parsed.blocks
    assert all(n > 0 for ns, n in parsed.blocks if ns not in ("shop.empty", "shop.v"))
    check_crcs(parsed)


def test_exact_bytes_of_a_one_document_archive() -> None:
    doc = bson.encode({"_id": 1})
    out = io.BytesIO()
    with ArchiveWriter(out, server_version="", tool_version="x") as writer:
        writer.add_namespace(EMPTY)
        writer.write_documents(EMPTY, [doc])
    term = b"\xff\xff\xff\xff"
    expected = (
        bytes.fromhex("6de29981")
        + bson.encode({"concurrent_collections": 1, "version": "0.1", "server_version": "",
                       "tool_version": "x"})
        + bson.encode({"db": "shop", "collection": "empty", "metadata": EMPTY.to_json(),
                       "size": 0, "type": "collection"}) + term
        + bson.encode({"db": "shop", "collection": "empty", "EOF": False, "CRC": Int64(0)})
        + doc + term
        + bson.encode({"db": "shop", "collection": "empty", "EOF": True,
                       "CRC": Int64(spec_crc64(doc))}) + term)
    assert out.getvalue() == expected


@pytest.mark.parametrize("compressed", [False, True])
def test_reader_gives_back_archive_order_and_raw_bytes(compressed: bool) -> None:
    data, expected = write_sample(compressed)
    reader = ArchiveReader(_OnlyRead(data))  # no seek, no peek: like a pipe
    assert reader.compressed is compressed
    assert reader.header["server_version"] == "7.0.4"
    assert [(e.db, e.collection, e.type) for e in reader.prelude][3:5] == [
        ("shop", "v", "view"), ("metrics", "ts", "timeseries")]
    assert reader.prelude[0].meta == COLL and reader.prelude[5].meta is None
    got = [(f"{db}.{coll}", doc) for (db, coll), doc in reader.documents()]
    assert got == expected
    assert all(p.ended for p in reader.progress.values())
    assert reader.progress[("metrics", "system.buckets.ts")].count == sum(
        1 for ns, _ in expected if ns == "metrics.system.buckets.ts")


class _OnlyRead:
    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(min(size, 7) if size > 0 else size)  # short reads too


@pytest.mark.parametrize("fixture", ["oplogdump", "collMod_ttl_index",
                                     "timeseries_tests/ts_dump_with_oplog"])
def test_fixture_dumps_as_archives(fixture: str) -> None:
    dump = DumpReader(TESTDATA / fixture)
    out = io.BytesIO()
    with ArchiveWriter(out, gzip=True) as writer:
        for ns in dump:
            assert ns.meta is not None
            writer.add_namespace(ns.meta)
        for ns in dump:
            writer.write_documents(ns.meta, ns.documents())  # type: ignore[arg-type]
    expected = [(f"{ns.db}.{ns.data_name}", d) for ns in dump for d in ns.documents()]
    parsed = spec_parse(out.getvalue())
    assert parsed.documents == expected
    check_crcs(parsed)
    out.seek(0)
    reader = ArchiveReader(out, validate=True)
    assert [(f"{db}.{c}", d) for (db, c), d in reader.documents()] == expected
    assert [e.meta for e in reader.prelude] == [ns.meta for ns in dump]


def test_writer_misuse_is_refused() -> None:
    writer = ArchiveWriter(io.BytesIO())
    writer.add_namespace(COLL)
    with pytest.raises(DumpFormatError, match="added twice"):
        writer.add_namespace(COLL)
    with pytest.raises(DumpFormatError, match="not in the archive prelude"):
        writer.write_documents(OTHER, [])
    writer.write_documents(COLL, [])
    with pytest.raises(DumpFormatError, match="add namespaces first"):
        writer.add_namespace(OTHER)
    writer.end_namespace(COLL)
    with pytest.raises(DumpFormatError, match="already ended"):
        writer.write_documents(COLL, random_documents(0, 1))
    with pytest.raises(DumpFormatError, match="document 0 of shop.v"):
        w2 = ArchiveWriter(io.BytesIO())
        w2.add_namespace(VIEW)
        w2.write_documents(VIEW, [b"\x05\x00\x00\x00\x01"])


# -- corruption ----------------------------------------------------------------

def read_everything(data: bytes) -> int:
    return sum(1 for _ in ArchiveReader(io.BytesIO(data)).documents())


def test_crc_mismatch_is_detected() -> None:
    out = io.BytesIO()
    with ArchiveWriter(out) as writer:
        writer.add_namespace(COLL)
        writer.write_documents(COLL, [bson.encode({"_id": 1, "s": "MARKER"})])
    data = out.getvalue()
    flipped = data.replace(b"MARKER", b"MARKES")  # framing intact, content changed
    with pytest.raises(ArchiveChecksumError, match="CRC mismatch for shop.orders"):
        read_everything(flipped)
    eof_at = data.rindex(b"CRC\x00") + 4
    bad_eof = data[:eof_at] + bytes([data[eof_at] ^ 1]) + data[eof_at + 1:]
    with pytest.raises(ArchiveChecksumError, match="its 1 documents give"):
        read_everything(bad_eof)


def test_every_truncation_is_an_error() -> None:
    data, expected = write_sample(False)
    assert read_everything(data) == len(expected)
    for cut in [*range(0, 200), *range(200, len(data), 37), len(data) - 1]:
        with pytest.raises(DumpFormatError):
            read_everything(data[:cut])


def test_truncated_gzip_archive_is_an_error() -> None:
    data, _ = write_sample(True)
    for cut in [3, 12, 30, 200, len(data) // 2, len(data) - 10, len(data) - 1]:
        with pytest.raises(DumpFormatError, match="gzip data|ends"):
            read_everything(data[:cut])


def _archive(*parts: bytes, prelude: tuple[CollectionMeta, ...] = (COLL,)) -> bytes:
    head = bytes.fromhex("6de29981") + bson.encode({"concurrent_collections": 1,
                                                     "version": "0.1"})
    for meta in prelude:
        head += bson.encode({"db": meta.db, "collection": meta.name,
                             "metadata": meta.to_json(), "size": 0, "type": meta.type})
    return head + b"\xff\xff\xff\xff" + b"".join(parts)


def _hdr(coll: str, eof: bool = False, crc: int = 0) -> bytes:
    return bson.encode({"db": "shop", "collection": coll, "EOF": eof, "CRC": Int64(crc)})


TERM = b"\xff\xff\xff\xff"
DOC = bson.encode({"_id": 1})


@pytest.mark.parametrize("data, message", [
    (b"\x6d\xe2\x99\x82rest", "not a mongodump archive"),
    (b"", "not a mongodump archive"),
    (_archive(_hdr("nope"), DOC, TERM), "namespace shop.nope is not in the prelude"),
    (_archive(TERM), "consecutive terminators"),
    (_archive(_hdr("orders", True, 0), TERM, _hdr("orders"), DOC, TERM),
     "block for shop.orders after its EOF"),
    (_archive(_hdr("orders", True, 0), DOC, TERM), "document after an EOF header"),
    (_archive(_hdr("orders"), DOC, TERM), "archive ends before the EOF of shop.orders"),
    (_archive(_hdr("orders"), DOC), "archive ends inside the block"),
    (_archive(_hdr("orders"), b"\x02\x00\x00\x00"), "2 is not a valid BSON document length"),
    (_archive(b"\x10\x00\x00\x00\x10a\x00"), "truncated document"),
    (_archive(b"\x07\x00\x00\x00\x10a\x00"), "namespace header is not valid BSON"),
])
def test_corrupt_archives_give_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(DumpFormatError, match=message) as err:
        read_everything(data)
    assert str(err.value).startswith("archive")


def test_good_hand_built_archive_reads() -> None:
    data = _archive(_hdr("orders"), DOC, TERM, _hdr("orders", True, spec_crc64(DOC)), TERM)
    assert read_everything(data) == 1


# -- streaming ---------------------------------------------------------------

def test_memory_does_not_grow_with_archive_size(tmp_path: Path) -> None:
    doc = bson.encode({"_id": 0, "pad": "p" * 1000})

    def many(n: int) -> Iterator[bytes]:
        for _ in range(n):
            yield doc

    path = tmp_path / "big.archive"
    tracemalloc.start()
    try:
        with open(path, "wb") as f, ArchiveWriter(f, gzip=True) as writer:
            writer.add_namespace(COLL)
            writer.add_namespace(OTHER)
            for _ in range(4):
                writer.write_documents(COLL, many(5000))
                writer.write_documents(OTHER, many(100))
        with open(path, "rb") as f:
            count = sum(1 for _ in ArchiveReader(f).documents())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 20400
    assert peak < 4_000_000, f"peak {peak} bytes for a 20 MB archive"


def test_archives_work_without_fastcrc() -> None:
    """The pure-Python CRC fallback writes and checks the same archives."""
    import subprocess
    import sys
    code = (
        "import sys, io; sys.modules['fastcrc'] = None\n"
        "from backupflows.mongodump import ArchiveWriter, ArchiveReader, CollectionMeta\n"
        "from backupflows.mongodump.crc64 import ACCELERATED\n"
        "import bson\n"
        "assert not ACCELERATED\n"
        "m = CollectionMeta('d', 'c'); out = io.BytesIO()\n"
        "with ArchiveWriter(out) as w:\n"
        "    w.add_namespace(m); w.write_documents(m, [bson.encode({'_id': i}) for i in range(9)])\n"
        "out.seek(0); assert sum(1 for _ in ArchiveReader(out).documents()) == 9\n"
        "sys.stdout.buffer.write(out.getvalue())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    parsed = spec_parse(result.stdout)
    assert len(parsed.documents) == 9
    check_crcs(parsed)
