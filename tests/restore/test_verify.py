"""The verified streams: documents or chunks, inline or on helper processes,
give the content hash of backupflows.contenthash; a wrong or unread stream
fails."""

from __future__ import annotations

import random
from pathlib import Path

import bson
import pytest

from backupflows.contenthash import ContentHash
from backupflows.errors import RestoreError
from backupflows.restore import destination, service
from backupflows.restore.hashpool import HashPool
from backupflows.restore.verify import Checked
from backupflows.storage.manifest import CollectionEntry
from tests.restore.expect import assert_same, expected_view, read_dump_dir
from tests.restore.world import World


def _docs(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [bson.encode({"_id": i, "pad": "x" * rng.randrange(0, 300)}) for i in range(n)]


def _chunks(docs: list[bytes], per: int) -> list[bytes]:
    return [b"".join(docs[i:i + per]) for i in range(0, len(docs), per)]


def test_every_way_of_reading_gives_the_content_hash() -> None:
    docs = _docs(5000)
    want = ContentHash.of(docs)
    by_doc = Checked(iter(docs), want, "t")
    assert list(by_doc.docs()) == docs and by_doc.check() == want
    joined = Checked(iter(docs), want, "t")
    assert b"".join(joined.chunks()) == b"".join(docs) and joined.check() == want
    split = Checked(None, want, "t", blocks=iter(_chunks(docs, 700)))
    assert list(split.docs()) == docs and split.check() == want
    with HashPool(workers=2) as pool:
        pooled = Checked(None, want, "t", blocks=iter(_chunks(docs, 300)), pool=pool)
        assert b"".join(pooled.chunks()) == b"".join(docs)
        assert pooled.check() == want and pooled.count == 5000


def test_mismatches_and_unread_streams_fail() -> None:
    docs = _docs(100)
    want = ContentHash.of(docs)
    short = Checked(iter(docs[:-1]), want, "shop.orders")
    list(short.docs())
    with pytest.raises(RestoreError, match="shop.orders: verification failed: delivered 99"):
        short.check()
    unread = Checked(iter(docs), want, "x")
    with pytest.raises(RestoreError, match="not read to its end"):
        unread.check()
    with HashPool(workers=1) as pool:
        bad = Checked(None, want, "x", blocks=iter([b"".join(docs)[:-3]]), pool=pool)
        with pytest.raises(RestoreError, match="bad document length"):
            list(bad.chunks())
        flipped = bytearray(b"".join(docs))
        flipped[200] ^= 1  # same framing, different bytes
        wrong = Checked(None, want, "x", blocks=iter([bytes(flipped)]), pool=pool)
        list(wrong.chunks())
        with pytest.raises(RestoreError, match="verification failed"):
            wrong.check()


def test_a_restore_hashed_on_helper_processes(history: World, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(destination, "POOL_MIN_DOCS", 0)
    # as for a format 1 manifest (no recorded block sums): documents are hashed
    monkeypatch.setattr(CollectionEntry, "block_sums", lambda self: None)
    used: list[int] = []
    submit = HashPool.submit

    def counted(self: HashPool, data: bytes) -> object:
        used.append(len(data))
        return submit(self, data)

    monkeypatch.setattr(HashPool, "submit", counted)
    sid, ts = next(iter(history.snapshots.items()))
    req = service.request(history.storage, deployment=history.name, snapshot_id=sid,
                          destination={"kind": "dir", "path": str(tmp_path / "p")})
    assert service.run(history.storage, req.id, "t")["state"] == "done"
    assert_same(read_dump_dir(tmp_path / "p"), expected_view(history.states[ts]))
    assert used
