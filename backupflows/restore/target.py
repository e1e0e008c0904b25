"""Destination: a target MongoDB (``--to-uri URI [--drop]``).

For each item, in order: with ``drop`` the target collection (or view) is
dropped; the collection is created with its options (capped, validator,
collation, clustered index, time series, views with their pipeline);
documents are written while they are read, in parallel batches
(``insert_many(ordered=False)`` of raw BSON, ``workers`` batches in flight,
document validation bypassed as mongorestore does); the indexes are built
after the data. A time series receives its buckets in
``system.buckets.<name>``, as mongorestore writes them.

Without ``drop``, ``prepare`` refuses the restore BEFORE anything is written
if any target collection holds documents (or a target view exists), naming
them all. The URI's password never appears in a message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from bson.raw_bson import RawBSONDocument
from bson.son import SON
from pymongo import MongoClient
from pymongo.errors import BulkWriteError, OperationFailure, PyMongoError

from backupflows.errors import RestoreError
from backupflows.mongodump.metadata import TIMESERIES, VIEW
from backupflows.redact import redact_text, redact_uri
from backupflows.restore.destination import Destination
from backupflows.restore.plan import Item
from backupflows.restore.verify import Checked

BATCH_DOCS = 1000
BATCH_BYTES = 8 * 1024 * 1024
_NAMESPACE_EXISTS = 48


class TargetDestination(Destination):
    kind = "uri"

    def __init__(self, uri: str, drop: bool = False, workers: int = 4,
                 client: MongoClient | None = None) -> None:
        self.uri = uri
        self.drop = drop
        self.workers = max(1, workers)
        self._own_client = client is None
        self._client = client
        self.written = 0
        self.collections = 0

    @property
    def client(self) -> MongoClient:
        if self._client is None:
            try:
                options: dict[str, Any] = {"maxPoolSize": self.workers + 2, "w": "majority"}
                if "serverselectiontimeoutms" not in self.uri.lower():  # the URI's wins
                    options["serverSelectionTimeoutMS"] = 15000
                self._client = MongoClient(self.uri, **options)
            except (PyMongoError, ValueError) as exc:
                raise RestoreError(f"target {redact_uri(self.uri)}: {_msg(exc)}") from None
        return self._client

    def _fail(self, what: str, exc: Exception) -> RestoreError:
        return RestoreError(f"target {redact_uri(self.uri)}: {what}: {_msg(exc)}")

    # -- prepare -----------------------------------------------------------------------

    def prepare(self, items: list[Item]) -> None:
        try:
            self.client.admin.command("ping")
            busy = [] if self.drop else [i.ns for i in items if self._occupied(i)]
        except PyMongoError as exc:
            raise self._fail("checking the target collections", exc) from None
        if busy:
            raise RestoreError(
                f"target {redact_uri(self.uri)} already holds data in {', '.join(busy)}; "
                "nothing was written (use --drop to replace those collections)")

    def _occupied(self, item: Item) -> bool:
        db = self.client[item.meta.db]
        info = _list_one(db, item.meta.name)
        if info is None:
            return False
        if info.get("type") == "view" or item.meta.type == VIEW:
            return True
        data = item.meta.data_name if item.meta.type == TIMESERIES else item.meta.name
        return db[data].find_one({}, projection={"_id": 1}) is not None

    # -- write -------------------------------------------------------------------------

    def write(self, item: Item, stream: Checked) -> None:
        db = self.client[item.meta.db]
        try:
            if self.drop:
                db.drop_collection(item.meta.name)
            self._create(db, item)
        except PyMongoError as exc:
            raise self._fail(f"creating {item.ns}", exc) from None
        if item.meta.has_data:
            self._insert(db[item.meta.data_name], item.ns, stream.docs())
        else:
            for _ in stream.docs():
                raise RestoreError(f"{item.ns} is a view and has documents")
        try:
            self._indexes(db, item)
        except PyMongoError as exc:
            raise self._fail(f"building the indexes of {item.ns}", exc) from None
        self.collections += 1

    def _create(self, db: Any, item: Item) -> None:
        cmd = SON([("create", item.meta.name)])
        for key, value in item.meta.options.items():
            if key not in ("uuid", "idIndex"):
                cmd[key] = value
        try:
            db.command(cmd)
        except OperationFailure as exc:
            if exc.code != _NAMESPACE_EXISTS:
                raise

    def _insert(self, coll: Any, ns: str, docs: Iterable[bytes]) -> None:
        pending: deque[Future[Any]] = deque()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="restore") as pool:
            try:
                for batch in _batches(docs):
                    pending.append(pool.submit(_insert_batch, coll, batch))
                    while len(pending) > self.workers * 2 or (pending and pending[0].done()):
                        self.written += pending.popleft().result()
                while pending:
                    self.written += pending.popleft().result()
            except (BulkWriteError, PyMongoError) as exc:
                for f in pending:
                    f.cancel()
                raise self._fail(f"writing {ns}", exc) from None

    def _indexes(self, db: Any, item: Item) -> None:
        specs = [SON((k, v) for k, v in spec.items() if k != "ns")
                 for spec in item.meta.indexes
                 if spec.get("name") != "_id_" and not spec.get("clustered")]
        if specs:
            db.command(SON([("createIndexes", item.meta.name), ("indexes", specs)]))

    def finish(self) -> dict[str, Any]:
        if self._own_client and self._client is not None:
            self._client.close()
        return {"kind": self.kind, "uri": redact_uri(self.uri), "collections": self.collections,
                "documents": self.written}

    def abort(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()


def _list_one(db: Any, name: str) -> dict[str, Any] | None:
    for info in db.list_collections(filter={"name": name}):
        return dict(info)
    return None


def _batches(docs: Iterable[bytes]) -> Iterator[list[RawBSONDocument]]:
    batch: list[RawBSONDocument] = []
    size = 0
    for doc in docs:
        batch.append(RawBSONDocument(doc))
        size += len(doc)
        if len(batch) >= BATCH_DOCS or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _insert_batch(coll: Any, batch: list[RawBSONDocument]) -> int:
    coll.insert_many(batch, ordered=False, bypass_document_validation=True)
    return len(batch)  # raw documents: pymongo lists no inserted ids; errors raise


def _msg(exc: Exception) -> str:
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors") or []
        first = errors[0].get("errmsg", "") if errors else ""
        return redact_text(f"{len(errors)} write error(s), first: {first}")
    return redact_text(str(exc))
