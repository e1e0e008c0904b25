"""Inserts, updates and deletes, with the idempotency rules of a fuzzy
initial sync (reference "Idempotency"):

- insert of an existing ``_id`` replaces the document;
- update of a missing document is skipped and its ``_id`` recorded missing
  (a legacy ``b: true`` replacement upserts instead);
- delete of a missing document does nothing.

Which collection an entry targets (``target``): by the entry's ``ui`` when
the head knows that UUID (renames keep UUIDs, so an entry written before a
rename still finds its collection); else by namespace, where a collection
without a recorded UUID (a dump without UUIDs) adopts the entry's ``ui``. An
entry whose ``ui`` is unknown while its namespace holds a collection with
another UUID targets a collection the head no longer has (dropped or
replaced later in the oplog): it is skipped. An insert into a namespace
that does not exist creates the collection (as the server's oplog
application does), with the entry's ``ui``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bson.raw_bson import RawBSONDocument

from backupflows.bsonorder import KeyError_, id_key, raw_id
from backupflows.contenthash import doc_digest
from backupflows.errors import OplogError
from backupflows.head import rawdoc
from backupflows.head.catalog import COLLECTION, Collection
from backupflows.head.store import DEFAULT_ID_INDEX, create_collection
from backupflows.oplog import update as upd
from backupflows.oplog.delta import apply_delta_raw
from backupflows.oplog.deltadict import apply_delta_codec
from backupflows.oplog.entry import Entry, objectid_key

if TYPE_CHECKING:
    from backupflows.head.writer import HeadWriter


def target(w: HeadWriter, db: str, coll: str, ui: bytes | None,
           create: bool = False) -> Collection | None:
    """The collection an entry on ``db.coll`` with UUID ``ui`` applies to."""
    cat = w.catalog
    if ui is not None:
        c = cat.by_uuid.get(ui)
        if c is not None:
            return c
    c = cat.get(db, coll)
    if c is not None:
        if ui is None:
            return c
        if c.uuid is None:
            cat.set_uuid(c, ui)
            return c
        return None
    if create:
        return create_collection(w, db, coll, ui, COLLECTION, rawdoc.EMPTY, [DEFAULT_ID_INDEX])
    return None


def displace(w: HeadWriter, c: Collection) -> None:
    """Move ``c`` out of its namespace to a temporary name in its database."""
    w.flush()
    w.catalog.rename(c, c.db, f"tmp.displaced.{c.cid}.{c.name}", w.seq)


def drop(w: HeadWriter, c: Collection) -> None:
    w.discard_collection(c)
    w.catalog.drop(c)


def _documents(c: Collection, e: Entry) -> Collection:
    if not c.holds_documents:
        raise e.error(f"targets {c.ns}, which is a {c.type}, not a collection")
    return c


def entry_key(e: Entry) -> bytes:
    """The ``_id`` key of the document a CRUD entry targets (cached)."""
    if e.key is None:
        src = e.o2() if e.op == "u" else e.o()
        if src is not None and (key := objectid_key(src, 0, len(src))) is not None:
            e.key = key
            return key
        try:
            e.key = id_key(src)  # type: ignore[arg-type]
        except KeyError_ as exc:
            where = "o2" if e.op == "u" else "o"
            raise e.error(f"bad '{where}': {exc}") from None
    return e.key


def apply_insert(w: HeadWriter, e: Entry) -> None:
    key = entry_key(e)
    c = target(w, e.db, e.coll, e.ui, create=True)
    if c is not None:
        w.put_new(_documents(c, e), key, e.o())


def apply_delete(w: HeadWriter, e: Entry) -> None:
    key = entry_key(e)
    c = target(w, e.db, e.coll, e.ui)
    if c is not None:
        w.delete(_documents(c, e), key)


def apply_update(w: HeadWriter, e: Entry) -> None:
    key = entry_key(e)
    c = target(w, e.db, e.coll, e.ui)
    if c is None:
        return
    _documents(c, e)
    old = w.get(c, key)
    o_raw = e.o()
    delta = _is_delta(o_raw)
    if delta and old is not None:
        _apply_plain_delta(w, c, e, key, old, o_raw)
        return
    kind = "delta" if delta else upd.classify(RawBSONDocument(o_raw))
    if old is None:
        if e.upsert and kind == "replacement":
            w.put(c, key, upd.apply_replacement(None, o_raw), None, known=True)
        else:
            w.note_missing(c, key, raw_id(e.o2()))  # type: ignore[arg-type]
        return
    new = updated(e, old, o_raw, kind, delta)
    if new != old:
        w.put(c, key, new, old, known=True)


class _Canonical:
    """Digests of documents written by the C-codec delta path: the latest
    ``MAX`` to ``2 * MAX`` (two generations; at most ~3 MiB). Such a document
    passes the codec's fidelity guard by construction
    (``deltadict.apply_delta_codec``), so its next ``$v: 2`` update skips
    re-encoding it. Keyed by content, so it holds for any head and any
    ``_id``, whatever happened to the document in between."""

    MAX = 1 << 14

    def __init__(self) -> None:
        self.digests: set[int] = set()
        self.older: set[int] = set()

    def __contains__(self, digest: int) -> bool:
        return digest in self.digests or digest in self.older

    def add(self, digest: int) -> None:
        if len(self.digests) >= self.MAX:
            self.older, self.digests = self.digests, set()
        self.digests.add(digest)


canonical = _Canonical()


def _apply_plain_delta(w: HeadWriter, c: Collection, e: Entry, key: bytes, old: bytes,
                       o_raw: bytes) -> None:
    """``apply_update`` of a ``{$v: 2, diff}`` entry (``_is_delta``) whose
    document exists: ``updated`` with the digests the content hash needs
    computed once (the old one as stored with the document, see
    ``HeadWriter.digest``), and the fidelity check of a document this path
    wrote skipped."""
    old_digest = w.digest(c, key, old)
    diff = o_raw[_DELTA_AT:-1]
    new = apply_delta_codec(old, diff, old_digest in canonical)
    by_codec = new is not None
    if new is None:
        try:
            new = apply_delta_raw(old, diff)
        except OplogError as exc:
            raise e.error(str(exc), type(exc)) from None
    if b"_id" in diff and id_key(new) != e.key:
        raise e.error("the update would change the document's _id")
    if new == old:
        return
    digest = doc_digest(new)
    if by_codec:
        canonical.add(digest)
    w.put(c, key, new, old, known=True, old_digest=old_digest, digest=digest)


_DELTA_HEAD = b"\x10$v\x00\x02\x00\x00\x00\x03diff\x00"
_DELTA_AT = 4 + len(_DELTA_HEAD)


def _is_delta(o_raw: bytes) -> bool:
    """The exact shape every server writes, ``{$v: 2, diff: {...}}``, seen
    without decoding (anything else goes through ``update.classify``)."""
    return (o_raw.startswith(_DELTA_HEAD, 4)
            and _DELTA_AT + int.from_bytes(o_raw[_DELTA_AT:_DELTA_AT + 4], "little")
            == len(o_raw) - 1)


def updated(e: Entry, old: bytes, o_raw: bytes, kind: str, plain_delta: bool = False) -> bytes:
    """The post-image of ``old`` under the update ``o_raw`` of ``kind``
    (``plain_delta``: ``o_raw`` has the exact shape ``_is_delta`` checks)."""
    try:
        if kind == "delta":
            diff = (o_raw[_DELTA_AT:-1] if plain_delta or _is_delta(o_raw)
                    else rawdoc.subdocument(o_raw, b"diff"))
            if diff is None:
                raise upd.InvalidUpdate("a $v: 2 update needs a document 'diff'")
            new = upd.apply_delta(old, diff)
            if b"_id" not in diff:
                return new  # both delta paths copy the unnamed _id as it was
        elif kind == "modifier":
            new = upd.apply_update(old, RawBSONDocument(o_raw))
        else:
            new = upd.apply_replacement(old, o_raw)
    except OplogError as exc:
        raise e.error(str(exc), type(exc)) from None
    if id_key(new) != e.key:
        raise e.error("the update would change the document's _id")
    return new
