"""Streaming pairs out of a real store through real DataLoader worker processes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from storage.layout import ChunkCorruptError
from storage.pairstore import PairStore, PairStoreError
from storage.stream import PairStream
from tests.storage.storekit import fill_with_index, mappings_of, store_kwargs

N, CHUNK = 203, 16  # 13 chunks, the last one short


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("stream") / "p.zarr")
    store = PairStore.create(uri, **store_kwargs(n=N, chunk=CHUNK))
    fill_with_index(store)
    store.finalize()
    return uri


def epoch_ids(stream: PairStream, epoch: int, num_workers: int = 0) -> list[int]:
    """Global sample ids in the order an epoch delivers them; checks each pair on the way."""
    stream.set_epoch(epoch)
    ids = []
    for x0, x1, y in DataLoader(stream, batch_size=None, num_workers=num_workers):
        assert x0.dtype == torch.float32 and y.dtype == torch.int64
        idx = x0[:, 0].long()
        torch.testing.assert_close(x1, 2 * x0 + 1)  # pairs stay together through the shuffle
        assert torch.equal(y, idx % 3)
        ids += idx.tolist()
    return ids


def test_every_pair_once_per_epoch_across_two_workers(finished):
    stream = PairStream(finished, batch_size=10, buffer_chunks=3, seed=7)
    orders = [epoch_ids(stream, e, num_workers=2) for e in range(2)]
    for ids in orders:
        assert sorted(ids) == list(range(N))  # exactly once: nothing missing, nothing twice
    assert orders[0] != orders[1]
    again = PairStream(finished, batch_size=10, buffer_chunks=3, seed=7)
    assert epoch_ids(again, 1, num_workers=2) == orders[1]  # deterministic for a seed
    other = PairStream(finished, batch_size=10, buffer_chunks=3, seed=8)
    assert epoch_ids(other, 1, num_workers=2) != orders[1]


def test_batches_are_full_until_each_workers_last(finished):
    stream = PairStream(finished, batch_size=24, buffer_chunks=2)
    sizes = [len(b[2]) for b in stream]
    assert sum(sizes) == N and all(s == 24 for s in sizes[:-1]) and 0 < sizes[-1] <= 24
    stream = PairStream(finished, batch_size=24, buffer_chunks=2, drop_last=True)
    assert {len(b[2]) for b in stream} == {24}


def test_without_workers_the_epoch_advances_by_itself(finished):
    stream = PairStream(finished, batch_size=32)
    first = [int(i) for b in stream for i in b[0][:, 0]]
    second = [int(i) for b in stream for i in b[0][:, 0]]
    assert sorted(first) == sorted(second) == list(range(N)) and first != second
    plain = PairStream(finished, batch_size=32, shuffle=False)
    assert [int(i) for b in plain for i in b[0][:, 0]] == list(range(N))


def test_ranks_split_the_chunks(finished):
    parts = [
        epoch_ids(PairStream(finished, batch_size=8, rank=r, world_size=3, seed=1), 5)
        for r in range(3)
    ]
    assert sorted(i for ids in parts for i in ids) == list(range(N))
    for r, ids in enumerate(parts):  # each rank streams exactly the chunks it was assigned
        assigned = PairStream(finished, 8, rank=r, world_size=3, seed=1).rank_chunks(5)
        assert {i // CHUNK for i in ids} == set(assigned)


def test_incomplete_store_is_refused_unless_only_done(tmp_path):
    uri = str(tmp_path / "p.zarr")
    store = PairStore.create(uri, **store_kwargs(n=N, chunk=CHUNK))
    fill_with_index(store, [0, 2, 3, 12])
    with pytest.raises(PairStoreError, match="incomplete \\(missing chunks: 1, 4-11"):
        PairStream(uri, batch_size=8)
    stream = PairStream(uri, batch_size=8, only_done=True)
    want = [*range(0, 16), *range(32, 64), *range(192, N)]
    assert sorted(epoch_ids(stream, 0, num_workers=2)) == want
    fill_with_index(store, [1])
    stream.set_epoch(1)  # picks up chunks finished since
    assert sorted(epoch_ids(stream, 1)) == sorted([*want, *range(16, 32)])


def test_bad_arguments(finished, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        PairStream(finished, batch_size=0)
    with pytest.raises(ValueError, match="buffer_chunks must be a positive int"):
        PairStream(finished, batch_size=4, buffer_chunks=0)
    with pytest.raises(ValueError, match="need 0 <= rank < world_size"):
        PairStream(finished, batch_size=4, rank=2, world_size=2)
    with pytest.raises(PairStoreError, match="no pair store at"):
        PairStream(str(tmp_path / "nothing.zarr"), batch_size=4)
    assert not (tmp_path / "nothing.zarr").exists()


@pytest.mark.parametrize("prefetch", [False, True])
def test_memory_is_bounded_by_the_buffer(finished, prefetch):
    """The stream holds at most buffer_chunks chunks (+ one batch), twice that when prefetching;
    the chunks it maps from the page cache are let go as it moves on, and all at the end."""
    stream = PairStream(finished, batch_size=5, buffer_chunks=2, prefetch=prefetch)
    reads, most = [], 0
    buffers = 2 if prefetch else 1
    original = stream._read_chunk

    def read(i):
        # Chunks still mapped when another is read: the last buffer's are gone by then.
        assert mappings_of(finished) <= (buffers * 2 - 1) * 2
        reads.append(i)
        return original(i)

    stream._read_chunk = read
    for n_batches, _ in enumerate(stream, 1):
        # Samples read (or being read) so far minus samples delivered is what the buffers hold.
        held = sum(min(CHUNK, N - i * CHUNK) for i in reads) - 5 * n_batches
        assert held <= buffers * 2 * CHUNK + 5
        most = max(most, mappings_of(finished))
        assert most <= buffers * 2 * 2  # x0 and x1 of each chunk in each buffer
    assert sorted(reads) == list(range(13))
    assert np.unique(reads).size == len(reads)
    assert most >= 2 * 2  # the full chunks were mapped, not copied (the short last one is read)
    assert mappings_of(finished) == 0


@pytest.mark.parametrize("shuffle", [False, True])
def test_prefetching_yields_the_same_batches(finished, shuffle):
    """The background read changes when chunks are read, never what is delivered."""
    kw = {"batch_size": 9, "buffer_chunks": 2, "seed": 3, "shuffle": shuffle}
    with_reader = list(PairStream(finished, prefetch=True, **kw))
    inline = list(PairStream(finished, prefetch=False, **kw))
    assert len(with_reader) == len(inline) == -(-N // 9)
    for a, b in zip(with_reader, inline, strict=True):
        for ta, tb in zip(a, b, strict=True):
            assert torch.equal(ta, tb)


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:], lambda b: b[:-5]],
    ids=["flipped", "truncated"],
)
def test_prefetch_stops_cleanly_and_reports_corrupt_chunks(finished, tmp_path, damage):
    stream = PairStream(finished, batch_size=4, buffer_chunks=1, prefetch=True)
    first = next(iter(stream))  # abandoning the epoch must not hang on the reader thread
    assert len(first[0]) == 4
    bad = tmp_path / "bad.zarr"
    shutil.copytree(finished, bad)
    obj = bad / PairStore.open(str(bad)).chunk_key("x1", 5)
    obj.write_bytes(damage(obj.read_bytes()))  # chunk 5's x1 no longer matches its crc32c
    stream = PairStream(str(bad), batch_size=4, buffer_chunks=1, shuffle=False, prefetch=True)
    delivered = []
    with pytest.raises(ChunkCorruptError, match="chunk 5 is corrupt: x1 unreadable"):
        for _, _, y in stream:
            delivered.append(len(y))
    assert sum(delivered) <= 5 * CHUNK  # the error comes where chunk 5 is due, never wrong data


def test_batches_are_fresh_writable_tensors(finished):
    """Batches kept after their chunks were let go still hold their own pairs, and writing to
    one changes nothing the stream delivers later (they never alias the mapped chunk files)."""
    stream = PairStream(finished, batch_size=7, buffer_chunks=1, seed=2)
    kept = list(stream)
    ids = []
    for x0, x1, y in kept:
        torch.testing.assert_close(x1, 2 * x0 + 1)
        assert torch.equal(y, x0[:, 0].long() % 3)
        ids += x0[:, 0].long().tolist()
        x1.zero_()  # writable, and private to the caller
    assert sorted(ids) == list(range(N))
    assert epoch_ids(stream, 0) == ids  # the same epoch again: the store is untouched


@pytest.mark.parametrize("prefetch", [False, True])
def test_two_live_iterators_and_an_abandoned_one(finished, prefetch):
    """Two epochs of one stream iterated at once each deliver exactly what a fresh stream gives
    for their epoch; an abandoned epoch stops its reader and lets its chunks go."""
    kw = {"batch_size": 9, "buffer_chunks": 2, "seed": 5, "prefetch": prefetch}
    stream = PairStream(finished, **kw)
    list(stream)  # epoch 0
    it1, it2 = iter(stream), iter(stream)  # epochs 1 and 2
    got1, got2 = [next(it1)], [next(it2)]
    for b1, b2 in zip(it1, it2, strict=False):
        got1.append(b1)
        got2.append(b2)
    got1 += list(it1)
    got2 += list(it2)
    for epoch, got in ((1, got1), (2, got2)):
        fresh = PairStream(finished, **kw)
        fresh.set_epoch(epoch)
        want = list(fresh)
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert all(torch.equal(ta, tb) for ta, tb in zip(a, b, strict=True))
    it = iter(stream)
    next(it)
    assert mappings_of(finished) > 0
    it.close()
    assert mappings_of(finished) == 0


@pytest.mark.parametrize(
    ("batch", "buffers", "rank", "world", "drop_last"),
    [(10, 2, 0, 1, False), (7, 3, 1, 2, False), (24, 1, 0, 1, True)],
)
def test_a_saved_position_continues_the_exact_batches(
    finished, batch, buffers, rank, world, drop_last
):
    def stream() -> PairStream:
        return PairStream(finished, batch, seed=2, buffer_chunks=buffers, rank=rank,
                          world_size=world, drop_last=drop_last)  # fmt: skip

    whole, seen = stream(), []  # two epochs, in-process, as fit iterates
    for _ in range(2):
        seen += [(whole.state_dict()["epoch"], b) for b in whole]  # each batch with its epoch
    assert whole.state_dict()["epoch"] == 1
    for at in {0, 1, len(seen) // 2 - 1, len(seen) // 2, len(seen) - 1}:
        resumed = stream()
        resumed.load_state_dict(_position_before(seen, at))
        rest = list(resumed) + (list(resumed) if seen[at][0] == 0 else [])
        assert len(rest) == len(seen) - at
        for got, (_, want) in zip(rest, seen[at:], strict=True):
            assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


def _position_before(seen: list, at: int) -> dict:
    """The stream's position right before batch ``at`` (counted over the epochs)."""
    epoch_of = [e for e, _ in seen]
    e = epoch_of[at]
    return {"epoch": e, "position": at - epoch_of.index(e)}
