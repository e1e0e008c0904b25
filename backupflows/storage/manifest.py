"""Snapshot manifests: what a snapshot is made of (format version 2).

A manifest is JSON in the container envelope (kind ``MNFT``, zstd), stored
as ``manifests/<job>/<snapshot id, 12 digits>``. It is enough on its own to
restore the snapshot: for every namespace of the head it records

- ``db``, ``name``, ``type`` (collection/view/timeseries), ``uuid`` (hex),
  ``options`` and ``indexes`` (raw BSON, base64) as the head holds them, and
  in-progress index ``builds``;
- ``count`` and ``hash``: the head's per-collection count and additive content
  hash (``backupflows.contenthash``) at the snapshot's optime;
- ``layers``: the whole layer chain, oldest first: one ``full`` layer (raw
  documents in ``_id`` order) followed by ``delta`` layers (upserted documents
  and tombstones in ``_id`` order). Each layer lists its blocks as
  ``[id, size, records, first key (hex), last key (hex)]`` and names the
  snapshot that wrote it. Since format 2 a block of a ``full`` layer may add
  a sixth element: the additive content hash (``backupflows.contenthash``,
  64 hex digits) of its ``records`` documents, computed from the block's own
  bytes when it was written. When every block of a collection's single full
  layer has one, ``take`` checked that they add up to the collection's
  ``count``/``hash``, and a restore verifies the collection from the SHA-256
  checked blocks and these sums, without hashing every document again.
  Format 1 manifests (no sums) still read; their restores hash every document.

Reading a collection = merging its layers by ``_id`` key, newest layer wins,
tombstones delete (``backupflows.storage.layers``).
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from backupflows.errors import IntegrityError
from backupflows.storage import container

FORMAT = 2
READABLE = (1, 2)  # formats this code reads (1: no per-block content sums)
KIND = b"MNFT"
FULL, DELTA = "full", "delta"


@dataclass
class BlockEntry:
    id: str
    size: int
    records: int
    first_key: bytes
    last_key: bytes
    sum: int | None = None  # content hash of its documents (full layers, format 2)

    def to_json(self) -> list[Any]:
        out = [self.id, self.size, self.records, self.first_key.hex(), self.last_key.hex()]
        if self.sum is not None:
            out.append(f"{self.sum:064x}")
        return out

    @classmethod
    def from_json(cls, v: list[Any]) -> BlockEntry:
        total = None
        if len(v) > 5 and v[5] is not None:
            if not isinstance(v[5], str) or len(v[5]) != 64:
                raise ValueError(f"block {v[0]}: bad content sum {v[5]!r}")
            total = int(v[5], 16)
        return cls(v[0], int(v[1]), int(v[2]), bytes.fromhex(v[3]), bytes.fromhex(v[4]), total)


@dataclass
class Layer:
    snapshot: int          # the snapshot that wrote it
    kind: str              # full | delta
    blocks: list[BlockEntry] = field(default_factory=list)
    docs: int = 0          # documents in the layer
    tombstones: int = 0    # deletes in the layer (delta only)
    size: int = 0          # uncompressed bytes

    def to_json(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, "kind": self.kind, "docs": self.docs,
                "tombstones": self.tombstones, "size": self.size,
                "blocks": [b.to_json() for b in self.blocks]}

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> Layer:
        return cls(int(v["snapshot"]), v["kind"], [BlockEntry.from_json(b) for b in v["blocks"]],
                   int(v["docs"]), int(v["tombstones"]), int(v["size"]))


@dataclass
class CollectionEntry:
    db: str
    name: str
    type: str
    uuid: bytes | None
    options: bytes
    indexes: list[bytes]
    count: int
    hash: str
    cid: int = 0
    generation: int = 0
    builds: list[tuple[bytes, bytes]] = field(default_factory=list)
    layers: list[Layer] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return f"{self.db}.{self.name}"

    @property
    def holds_documents(self) -> bool:
        return self.type == "collection"

    def block_ids(self) -> list[str]:
        return [b.id for layer in self.layers for b in layer.blocks]

    def block_sums(self) -> list[BlockEntry] | None:
        """The blocks of a collection stored as ONE full layer whose every
        block records its content sum (then the collection's content is the
        concatenation of these blocks and its hash the sum of theirs); None
        otherwise (delta layers, or a format 1 manifest)."""
        if len(self.layers) != 1 or self.layers[0].kind != FULL:
            return None
        blocks = self.layers[0].blocks
        if any(b.sum is None for b in blocks):
            return None
        return blocks

    def to_json(self) -> dict[str, Any]:
        return {"db": self.db, "name": self.name, "type": self.type,
                "uuid": self.uuid.hex() if self.uuid is not None else None,
                "options": _b64(self.options), "indexes": [_b64(i) for i in self.indexes],
                "builds": [[_b64(u), _b64(s)] for u, s in self.builds],
                "count": self.count, "hash": self.hash, "cid": self.cid,
                "generation": self.generation, "layers": [la.to_json() for la in self.layers]}

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> CollectionEntry:
        return cls(v["db"], v["name"], v["type"],
                   bytes.fromhex(v["uuid"]) if v.get("uuid") else None,
                   _unb64(v["options"]), [_unb64(i) for i in v["indexes"]],
                   int(v["count"]), v["hash"], int(v.get("cid", 0)),
                   int(v.get("generation", 0)),
                   [(_unb64(u), _unb64(s)) for u, s in v.get("builds", [])],
                   [Layer.from_json(la) for la in v["layers"]])


@dataclass
class Manifest:
    snapshot: int
    job: int
    kind: str
    optime_ts: int
    optime_t: int
    mark: int
    head_generation: int
    created: str
    parent: int | None = None
    collections: list[CollectionEntry] = field(default_factory=list)

    def collection(self, db: str, name: str) -> CollectionEntry | None:
        for c in self.collections:
            if (c.db, c.name) == (db, name):
                return c
        return None

    def block_ids(self) -> list[str]:
        """Every block the snapshot needs (each once, in manifest order)."""
        return list(dict.fromkeys(b for c in self.collections for b in c.block_ids()))

    def own_block_ids(self) -> list[str]:
        """Blocks of the layers this snapshot wrote."""
        return list(dict.fromkeys(b.id for c in self.collections for la in c.layers
                                  if la.snapshot == self.snapshot for b in la.blocks))

    def deps(self) -> set[int]:
        """Snapshots whose layers this manifest uses (itself included)."""
        return {self.snapshot} | {la.snapshot for c in self.collections for la in c.layers}

    def to_json(self) -> dict[str, Any]:
        head = {k: v for k, v in asdict(self).items() if k != "collections"}
        return {"format": FORMAT, **head,
                "collections": [c.to_json() for c in self.collections]}

    @classmethod
    def from_json(cls, v: dict[str, Any]) -> Manifest:
        if v.get("format") not in READABLE:
            raise IntegrityError(f"unsupported manifest format {v.get('format')!r}")
        return cls(int(v["snapshot"]), int(v["job"]), v["kind"], int(v["optime_ts"]),
                   int(v["optime_t"]), int(v["mark"]), int(v["head_generation"]),
                   v["created"], v.get("parent"),
                   [CollectionEntry.from_json(c) for c in v["collections"]])


def object_name(job: int, snapshot: int) -> str:
    return f"manifests/{job}/{snapshot:012d}"


def pack(m: Manifest) -> bytes:
    payload = json.dumps(m.to_json(), separators=(",", ":")).encode()
    return container.pack(KIND, {"snapshot": m.snapshot, "job": m.job, "format": FORMAT},
                          payload)


def unpack(raw: bytes, what: str = "manifest") -> Manifest:
    header, payload = container.unpack(raw, kind=KIND, what=what)
    try:
        m = Manifest.from_json(json.loads(payload))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise IntegrityError(f"{what}: corrupt manifest: {exc}") from None
    if header.get("snapshot") != m.snapshot:
        raise IntegrityError(f"{what}: header names snapshot {header.get('snapshot')}, "
                             f"content {m.snapshot}")
    return m


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)
