"""Fixtures: a sandbox replica set per test, or a real one.

- ``sandbox``: a fresh ``SandboxServer`` on an ephemeral port (skipped when
  ``BACKUPFLOWS_TEST_MONGODB_URI`` points at a real replica set);
- ``make_sandbox(**kwargs)``: start sandboxes with other settings (small
  oplog, short noop interval), all stopped at teardown;
- ``mongo_uri`` / ``mongo_client``: the real replica set from
  ``BACKUPFLOWS_TEST_MONGODB_URI`` if set, else the test's sandbox;
- ``unique_db``: a database name unique to the test, dropped afterwards.

Mark tests that only make sense against the sandbox (fault injection, oplog
size, internals) with ``@pytest.mark.sandbox_only``; they are skipped when a
real server is configured.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pymongo
import pytest

from backupflows.sandbox.server import SandboxServer

REAL_URI_ENV = "BACKUPFLOWS_TEST_MONGODB_URI"


def real_uri() -> str | None:
    return os.environ.get(REAL_URI_ENV) or None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sandbox_only: needs the sandbox (skipped against a real MongoDB)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if real_uri() and item.get_closest_marker("sandbox_only"):
        pytest.skip(f"sandbox-only test ({REAL_URI_ENV} is set)")


@pytest.fixture
def make_sandbox() -> Iterator[Callable[..., SandboxServer]]:
    servers: list[SandboxServer] = []

    def start(**kwargs) -> SandboxServer:
        if real_uri():
            pytest.skip(f"sandbox-only fixture ({REAL_URI_ENV} is set)")
        server = SandboxServer(**kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sandbox(make_sandbox: Callable[..., SandboxServer]) -> SandboxServer:
    return make_sandbox()


@pytest.fixture
def mongo_uri(request: pytest.FixtureRequest) -> str:
    uri = real_uri()
    if uri:
        return uri
    return request.getfixturevalue("sandbox").uri


@pytest.fixture
def mongo_client(mongo_uri: str) -> Iterator[pymongo.MongoClient]:
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=10000)
    yield client
    client.close()


@pytest.fixture
def unique_db(mongo_client: pymongo.MongoClient) -> Iterator[str]:
    name = f"bftest_{uuid.uuid4().hex[:10]}"
    yield name
    mongo_client.drop_database(name)
