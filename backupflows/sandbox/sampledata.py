"""Sample data for the demo, the tests and the benchmarks.

Uses pymongo only, so it works against the sandbox and against a real
replica set alike:

- ``generate(client, databases=..., target_bytes=..., seed=...)`` fills
  several databases and collections with realistic documents (see
  ``sampledocs``), inserted in batches with ``insert_many(ordered=False)``;
  the same seed gives byte-identical collections.
- ``WriteLoad(client, namespaces, rate_per_s, seed)`` (in ``writeload``,
  re-exported here) runs a write load in a thread.
- ``fingerprint(client, namespaces)`` gives each collection's count and
  content hash (``ContentHash`` over raw documents), to compare a source with
  a restore.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import pymongo
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from backupflows.contenthash import ContentHash
from backupflows.errors import BackupflowsError
from backupflows.sandbox.sampledocs import KIND_WEIGHTS, KINDS, DocumentFactory
from backupflows.sandbox.writeload import WriteLoad, WriteLoadStats

__all__ = ["DEFAULT_DATABASES", "GenerateReport", "WriteLoad", "WriteLoadStats",
           "fingerprint", "generate", "user_namespaces"]

DEFAULT_DATABASES = ("sample_shop", "sample_ops")
DEFAULT_BATCH_BYTES = 4 * 1024 * 1024
RAW = CodecOptions(document_class=RawBSONDocument)
_SYSTEM_DATABASES = {"admin", "local", "config"}


@dataclass
class GenerateReport:
    """What ``generate`` wrote."""

    documents: int = 0
    bytes: int = 0
    seconds: float = 0.0
    namespaces: dict[str, int] = field(default_factory=dict)  # ns -> documents

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.documents} documents, {self.bytes / 1e6:.1f} MB in "
                f"{len(self.namespaces)} collections, {self.seconds:.1f} s "
                f"({self.mb_per_s:.1f} MB/s)")


def generate(client: pymongo.MongoClient, *, databases: Sequence[str] = DEFAULT_DATABASES,
             collections: Sequence[str] = KINDS, target_bytes: int = 16 * 1024 * 1024,
             seed: int = 0, batch_bytes: int = DEFAULT_BATCH_BYTES) -> GenerateReport:
    """Fill ``databases`` x ``collections`` with about ``target_bytes`` of documents.

    Collection names are document kinds (``sampledocs.KINDS``); each kind gets
    a fixed share of the bytes (events and orders most). The collections must
    not hold documents yet (a clear error otherwise). Deterministic for a seed:
    the documents depend on the seed, the database's position in
    ``databases`` and the collection, not on the database's name.
    """
    _check_generate_args(databases, collections, target_bytes, batch_bytes)
    namespaces = [f"{db}.{coll}" for db in databases for coll in collections]
    streams = [f"{seed}:{i}:{coll}" for i in range(len(databases)) for coll in collections]
    for ns in namespaces:
        db, coll = ns.split(".", 1)
        if client[db][coll].find_one({}, {"_id": 1}) is not None:
            raise BackupflowsError(f"sample data: collection {ns} already holds documents")
    weights = [KIND_WEIGHTS[ns.split(".", 1)[1]] for ns in namespaces]
    report = GenerateReport()
    started = time.perf_counter()
    for ns, stream, weight in zip(namespaces, streams, weights, strict=True):
        share = target_bytes * weight // sum(weights)
        _fill(client, ns, share, random.Random(stream), batch_bytes, report)
    report.seconds = time.perf_counter() - started
    return report


def _check_generate_args(databases: Sequence[str], collections: Sequence[str],
                         target_bytes: int, batch_bytes: int) -> None:
    if isinstance(databases, str) or not databases:
        raise ValueError("databases must be a non-empty sequence of database names")
    bad = [db for db in databases if not db or "." in db or db in _SYSTEM_DATABASES]
    if bad:
        raise ValueError(f"invalid sample database name(s): {bad}")
    unknown = [c for c in collections if c not in KINDS]
    if isinstance(collections, str) or not collections or unknown:
        raise ValueError(f"collections must be a non-empty sequence of kinds "
                         f"({', '.join(KINDS)}); got {collections!r}")
    if target_bytes <= 0 or batch_bytes <= 0:
        raise ValueError("target_bytes and batch_bytes must be positive")


def _fill(client: pymongo.MongoClient, ns: str, share: int, rng: random.Random,
          batch_bytes: int, report: GenerateReport) -> None:
    db, coll = ns.split(".", 1)
    collection = client[db].get_collection(coll, codec_options=RAW)
    factory = DocumentFactory(coll, rng)
    written = 0
    for batch, size in _batches(factory, share, batch_bytes):
        collection.insert_many(batch, ordered=False)
        written += len(batch)
        report.bytes += size
    report.documents += written
    report.namespaces[ns] = written


def _batches(factory: DocumentFactory, share: int,
             batch_bytes: int) -> Iterator[tuple[list[RawBSONDocument], int]]:
    """Batches of about ``batch_bytes`` until ``share`` bytes (at least one document)."""
    share, total = max(share, 1), 0
    while total < share:
        batch: list[RawBSONDocument] = []
        size = 0
        while size < batch_bytes and total + size < share:
            raw = factory.next_document()
            batch.append(RawBSONDocument(raw, RAW))
            size += len(raw)
        total += size
        yield batch, size


def user_namespaces(client: pymongo.MongoClient) -> list[str]:
    """Every non-system collection (views excluded) of every user database, sorted."""
    names = []
    for db in client.list_database_names():
        if db in _SYSTEM_DATABASES:
            continue
        for info in client[db].list_collections():
            if info.get("type", "collection") == "collection" and not info["name"].startswith(
                    "system."):
                names.append(f"{db}.{info['name']}")
    return sorted(names)


def fingerprint(client: pymongo.MongoClient,
                namespaces: Iterable[str] | None = None) -> dict[str, ContentHash]:
    """Count and content hash of each collection, read as raw BSON.

    ``namespaces`` defaults to every user collection. A missing collection
    counts as empty. Two deployments hold the same data exactly when their
    fingerprints are equal (field order included).
    """
    result: dict[str, ContentHash] = {}
    for ns in user_namespaces(client) if namespaces is None else namespaces:
        db, sep, coll = ns.partition(".")
        if not sep or not db or not coll:
            raise ValueError(f"invalid namespace {ns!r} (expected db.collection)")
        collection = client[db].get_collection(coll, codec_options=RAW)
        digest = ContentHash()
        for doc in collection.find({}, batch_size=10_000):
            digest.add(doc.raw)
        result[ns] = digest
    return result
