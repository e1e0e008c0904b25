"""Fixtures of the source tests: a backupflows client of the test's sandbox
(or of the real replica set in BACKUPFLOWS_TEST_MONGODB_URI)."""

from __future__ import annotations

from collections.abc import Iterator

import pymongo
import pytest

from backupflows.source.client import Backoff, connect

#: retries without the production delays
FAST = Backoff(attempts=5, first_s=0.01, max_s=0.05)


@pytest.fixture
def source(mongo_uri: str) -> Iterator[pymongo.MongoClient]:
    client = connect(mongo_uri)
    yield client
    client.close()
