"""Shared pieces of the mongodump format tests."""

from __future__ import annotations

import random

import bson
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

from tests.fixture_paths import MONGO_TOOLS as FIXTURES  # noqa: E402

TESTDATA = FIXTURES / "mongorestore" / "testdata"


def random_documents(seed: int, count: int, max_pad: int = 300) -> list[bytes]:
    """Raw documents of varied types and sizes, reproducible from ``seed``."""
    rng = random.Random(seed)
    docs = []
    for i in range(count):
        docs.append(bson.encode({
            "_id": rng.choice([i, Int64(i), float(i) + 0.5, str(i), ObjectId(rng.randbytes(12))]),
            "s": "é" * rng.randrange(0, 5) + "x" * rng.randrange(0, max_pad),
            "n": rng.choice([None, True, Decimal128("1.10"), Timestamp(i, 1)]),
            "b": Binary(rng.randbytes(rng.randrange(0, 20)), rng.choice([0, 4, 128])),
            "a": [rng.random() for _ in range(rng.randrange(0, 4))],
            "d": {"k": i, "nested": {"deep": [1, {"x": "y"}]}},
        }))
    return docs
