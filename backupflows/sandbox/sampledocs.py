"""Realistic sample documents, built cheaply and deterministically.

A ``DocumentFactory`` builds the documents of one collection *kind* as raw
BSON: the kind decides the ``_id`` type and the shape (nested documents,
arrays, dates, decimals, binary), a seeded ``random.Random`` decides the
values, and each document is grown to a target size drawn from a realistic
distribution (most documents a few hundred bytes, a tail up to 100 KB). Text
and binary filler are slices of pools built once, so large documents cost a
memcpy, not a loop. The same seed gives byte-identical documents.

Kinds (also the default collection names):

=========  =====================================  ===========================
kind       ``_id``                                shape
=========  =====================================  ===========================
customers  string ``cust-000000042``              address, geo point, tags
orders     int                                    line items, Decimal128
events     ObjectId                               nested payload, dates
sessions   UUID (Binary subtype 4)                binary token and blob
metrics    compound ``{host, ts}``                arrays of doubles
misc       mixed: int, Int64, string, ObjectId,   a bit of everything
           UUID, compound, per document
=========  =====================================  ===========================
"""

from __future__ import annotations

import datetime
import functools
import math
import random
import struct
import uuid
from collections.abc import Callable

import bson
from bson.binary import Binary, UuidRepresentation
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId

MIN_SIZE = 100
MAX_SIZE = 100 * 1024
KINDS = ("customers", "orders", "events", "sessions", "metrics", "misc")
# Share of a data set's bytes that goes to each kind.
KIND_WEIGHTS = {"customers": 2, "orders": 3, "events": 4, "sessions": 1, "metrics": 2, "misc": 1}

_I32 = struct.Struct("<i")
_EPOCH = datetime.datetime(2024, 1, 1)
_YEAR_MS = 365 * 24 * 3600 * 1000
_TEXT_POOL_SIZE = 1 << 20
_BYTES_POOL_SIZE = 1 << 18
_SYLLABLES = ("ba", "ko", "ri", "sen", "ta", "lo", "mi", "qua", "dre", "vin", "el", "or",
              "pa", "nu", "zet", "ix", "ham", "sol", "ur", "de")
_STATUSES = ("new", "paid", "shipped", "delivered", "returned", "cancelled")
_EVENT_TYPES = ("click", "view", "purchase", "login", "logout", "search", "error")
_CITIES = ("Lyon", "Oslo", "Porto", "Kyoto", "Quito", "Perth", "Dakar", "Tampere")


@functools.lru_cache(maxsize=1)
def text_pool() -> str:
    """1 MiB of ASCII words (fixed, independent of any seed)."""
    rng = random.Random(0x5EED)
    words = ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(4096)]
    parts: list[str] = []
    size = 0
    while size < _TEXT_POOL_SIZE + MAX_SIZE:
        chunk = " ".join(rng.choices(words, k=1024)) + ". "
        parts.append(chunk)
        size += len(chunk)
    return "".join(parts)


@functools.lru_cache(maxsize=1)
def bytes_pool() -> bytes:
    """256 KiB of pseudo-random bytes (fixed, independent of any seed)."""
    return random.Random(0xB17E5).randbytes(_BYTES_POOL_SIZE + MAX_SIZE)


@functools.lru_cache(maxsize=1)
def money_pool() -> tuple[Decimal128, ...]:
    """4096 prices (Decimal128 parsing is slow; picking from a pool is not)."""
    rng = random.Random(0xCA5E)
    cents = (rng.randrange(99, 250_000) for _ in range(4096))
    return tuple(Decimal128(f"{c // 100}.{c % 100:02d}") for c in cents)


def target_size(rng: random.Random) -> int:
    """A document size: 70% 100 B-1 KB, 25% 1-10 KB, 5% 10-100 KB (log-uniform)."""
    r = rng.random()
    low, high = (100, 1000) if r < 0.70 else (1000, 10_000) if r < 0.95 else (10_000, MAX_SIZE)
    return int(math.exp(rng.uniform(math.log(low), math.log(high))))


class DocumentFactory:
    """Builds raw BSON documents of one kind.

    Sequential ``_id`` values (int, string, compound) start at ``id_start``,
    so two factories with distant starts never collide; ObjectId and UUID
    values come from the seeded generator.
    """

    def __init__(self, kind: str, rng: random.Random, id_start: int = 1) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown sample document kind {kind!r} (one of {', '.join(KINDS)})")
        self.kind = kind
        self.rng = rng
        self.next_n = id_start
        self._text = text_pool()
        self._bytes = bytes_pool()
        self._shape: Callable[[object, int], dict] = getattr(self, f"_shape_{kind}")

    # -- public ------------------------------------------------------------
    def next_document(self) -> bytes:
        """The next document (a new ``_id``), as raw BSON."""
        n = self.next_n
        self.next_n += 1
        return self.build(self.new_id(n))

    def new_id(self, n: int) -> object:
        """The ``_id`` of the ``n``-th document of this kind."""
        return _ID_MAKERS[self._id_style(n)](self, n)

    def build(self, _id: object) -> bytes:
        """A document with the given ``_id`` and a size drawn from the distribution."""
        size = target_size(self.rng)
        doc = self._shape(_id, size)
        raw = bson.encode(doc)
        room = size - len(raw)
        if room >= 11:
            raw = self._pad(raw, room)
        return raw

    def text(self, length: int) -> str:
        start = self.rng.randrange(len(self._text) - length)
        return self._text[start:start + length]

    def blob(self, length: int) -> bytes:
        start = self.rng.randrange(len(self._bytes) - length)
        return self._bytes[start:start + length]

    def date(self) -> datetime.datetime:
        return _EPOCH + datetime.timedelta(milliseconds=self.rng.randrange(_YEAR_MS))

    def money(self) -> Decimal128:
        return self.rng.choice(money_pool())

    # -- ids ---------------------------------------------------------------
    def _id_style(self, n: int) -> str:
        if self.kind != "misc":
            return _KIND_ID[self.kind]
        return _MISC_ID_CYCLE[n % len(_MISC_ID_CYCLE)]

    def _object_id(self, n: int) -> ObjectId:
        seconds = 1_700_000_000 + n // 64
        return ObjectId(struct.pack(">I", seconds) + self.rng.randbytes(8))

    def _uuid(self, n: int) -> Binary:
        value = uuid.UUID(int=self.rng.getrandbits(128), version=4)
        return Binary.from_uuid(value, UuidRepresentation.STANDARD)

    def _compound(self, n: int) -> dict:
        return {"host": f"host-{n % 97:02d}", "ts": _EPOCH + datetime.timedelta(seconds=n)}

    # -- shapes (small core; optional parts only when the size allows) -------
    def _shape_customers(self, _id: object, size: int) -> dict:
        rng = self.rng
        doc: dict = {"_id": _id, "name": self.text(12).strip(), "tier": rng.randrange(4)}
        if size >= 400:
            doc["email"] = f"user{rng.randrange(10**6)}@example.org"
            doc["address"] = {"street": self.text(18), "city": rng.choice(_CITIES),
                              "zip": f"{rng.randrange(10**5):05d}",
                              "geo": {"type": "Point", "coordinates": [
                                  round(rng.uniform(-180, 180), 5),
                                  round(rng.uniform(-90, 90), 5)]}}
            doc["created"] = self.date()
            doc["tags"] = [self.text(6).strip() for _ in range(rng.randrange(1, 5))]
        return doc

    def _shape_orders(self, _id: object, size: int) -> dict:
        rng = self.rng
        doc: dict = {"_id": _id, "status": rng.choice(_STATUSES), "total": self.money()}
        if size >= 300:
            doc["customer"] = f"cust-{rng.randrange(10**6):09d}"
            doc["placed"] = self.date()
            doc["items"] = self._items(min(400, size // 250))
        return doc

    def _items(self, count: int) -> list[dict]:
        """Order line items; one 32-bit draw per item keeps large orders cheap."""
        prices = money_pool()
        items = []
        for r in (self.rng.getrandbits(32) for _ in range(count)):
            items.append({"sku": f"SKU-{r & 0xFFFF:05d}", "qty": (r >> 16) % 9 + 1,
                          "price": prices[r >> 20]})
        return items

    def _shape_events(self, _id: object, size: int) -> dict:
        rng = self.rng
        doc: dict = {"_id": _id, "type": rng.choice(_EVENT_TYPES), "at": self.date()}
        if size >= 350:
            doc["user"] = {"id": rng.randrange(10**6), "agent": self.text(20)}
            doc["payload"] = {"page": f"/p/{rng.randrange(999)}",
                              "latency_ms": rng.random() * 300,
                              "flags": {"beta": rng.random() < 0.1, "retry": rng.randrange(3)}}
        return doc

    def _shape_sessions(self, _id: object, size: int) -> dict:
        rng = self.rng
        doc: dict = {"_id": _id, "user": rng.randrange(10**6), "token": Binary(self.blob(16))}
        if size >= 250:
            started = self.date()
            doc["started"] = started
            doc["expires"] = started + datetime.timedelta(hours=rng.randint(1, 48))
            doc["ip"] = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}"
        return doc

    def _shape_metrics(self, _id: object, size: int) -> dict:
        rng = self.rng
        doc: dict = {"_id": _id, "cpu": round(rng.random() * 100, 2)}
        if size >= 300:
            doc["mem"] = Int64(rng.randrange(1 << 34))
            doc["labels"] = {"dc": rng.choice(_CITIES).lower(), "rack": rng.randrange(40)}
            doc["samples"] = [rng.random() for _ in range(min(4000, size // 60))]
        return doc

    def _shape_misc(self, _id: object, size: int) -> dict:
        rng = self.rng
        doc: dict = {"_id": _id, "v": rng.randrange(1000)}
        if size >= 300:
            doc.update(when=self.date(), price=self.money(), ok=rng.random() < 0.5,
                       nothing=None, bin=Binary(self.blob(24)),
                       nested={"a": {"b": {"c": [1, "two", 3.0]}}})
        return doc

    # -- filler ------------------------------------------------------------
    def _pad(self, raw: bytes, room: int) -> bytes:
        """Append a filler field to raw BSON so the document has ``room`` more
        bytes: binary ``blob`` for sessions, text ``body`` otherwise."""
        if self.kind == "sessions":
            data = self.blob(room - 11)  # type, "blob\0", int32 length, subtype
            element = b"\x05blob\x00" + _I32.pack(len(data)) + b"\x00" + data
        else:
            data = self.text(room - 11).encode()  # type, "body\0", int32 length, NUL
            element = b"\x02body\x00" + _I32.pack(len(data) + 1) + data + b"\x00"
        return _I32.pack(len(raw) + len(element)) + raw[4:-1] + element + b"\x00"


_KIND_ID = {"customers": "string", "orders": "int", "events": "objectid",
            "sessions": "uuid", "metrics": "compound"}
_MISC_ID_CYCLE = ("int", "string", "objectid", "uuid", "compound", "int64")
_ID_MAKERS: dict[str, Callable[[DocumentFactory, int], object]] = {
    "int": lambda f, n: n,
    "int64": lambda f, n: Int64(n + (1 << 40)),
    "string": lambda f, n: f"cust-{n:09d}",
    "objectid": DocumentFactory._object_id,
    "uuid": DocumentFactory._uuid,
    "compound": DocumentFactory._compound,
}
