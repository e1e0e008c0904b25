"""The chunker's rule: pure, never splits a record, sizes bounded, local
boundaries (one changed/inserted document changes O(1) blocks)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from backupflows.storage.chunker import Chunker, ChunkParams, chunks

P = ChunkParams(avg=4096)


def _records(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    return [(i.to_bytes(8, "big"), rng.randbytes(rng.randrange(20, 600))) for i in range(n)]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=3000), max_size=300), st.integers(0, 3))
def test_blocks_are_the_records_in_order_never_split(datas: list[bytes], seed: int) -> None:
    recs = [(i.to_bytes(4, "big") + bytes([seed]), d) for i, d in enumerate(datas)]
    out = list(chunks(recs, P))
    assert b"".join(c.data for c in out) == b"".join(d for _, d in recs)
    assert sum(c.count for c in out) == len(recs)
    pos = 0
    for c in out:  # each block is whole records, with its key range
        assert c.data == b"".join(d for _, d in recs[pos:pos + c.count])
        assert (c.first_key, c.last_key) == (recs[pos][0], recs[pos + c.count - 1][0])
        last = len(recs[pos + c.count - 1][1])
        assert len(c.data) - last < P.max  # only the record that crossed max ends past it
        pos += c.count
    feeder = Chunker(P)
    fed = [c for k, d in recs if (c := feeder.add(k, d)) is not None]
    if (tail := feeder.finish()) is not None:
        fed.append(tail)
    assert [c.data for c in fed] == [c.data for c in out]


def test_average_block_size_is_near_the_target() -> None:
    out = list(chunks(_records(40_000, 1), P))
    sizes = [len(c.data) for c in out[:-1]]
    assert 0.7 * P.avg < sum(sizes) / len(sizes) < 1.4 * P.avg
    assert min(sizes) >= P.min


def test_one_changed_or_inserted_document_changes_o1_blocks() -> None:
    recs = _records(20_000, 2)
    base = {c.data for c in chunks(recs, P)}
    rng = random.Random(5)
    for _ in range(20):
        i = rng.randrange(len(recs))
        changed = list(recs)
        changed[i] = (recs[i][0], rng.randbytes(len(recs[i][1]) + rng.randrange(-10, 10)))
        new = [c for c in chunks(changed, P) if c.data not in base]
        assert 1 <= len(new) <= 3
        inserted = recs[:i] + [(recs[i][0] + b"+", rng.randbytes(300))] + recs[i:]
        new = [c for c in chunks(inserted, P) if c.data not in base]
        assert 1 <= len(new) <= 3
        deleted = recs[:i] + recs[i + 1:]
        assert len([c for c in chunks(deleted, P) if c.data not in base]) <= 3


def test_summed_chunks_cut_alike_and_carry_their_records_digest_sum() -> None:
    recs = _records(3000, seed=4)
    params = ChunkParams(avg=2048)
    digests = [random.Random(i).getrandbits(256) for i in range(len(recs))]
    plain = list(chunks(recs, params))
    summed = list(chunks(((k, r, d) for (k, r), d in zip(recs, digests, strict=True)),
                         params, summed=True))
    assert [(c.data, c.count, c.first_key, c.last_key) for c in summed] == \
        [(c.data, c.count, c.first_key, c.last_key) for c in plain]
    assert all(c.sum is None for c in plain)
    start = 0
    for c in summed:
        assert c.sum == sum(digests[start:start + c.count])
        start += c.count
    assert start == len(recs) and len(summed) > 10
