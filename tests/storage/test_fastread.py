"""Direct chunk reads (storage.fastread) return exactly what zarr returns, and fail as loudly."""

from __future__ import annotations

import numpy as np
import pytest
from zarr.codecs import ZstdCodec

from storage.fastread import is_plain, read_plain_chunk
from storage.layout import ChunkCorruptError
from storage.pairstore import PairStore
from tests.storage.storekit import fill_with_index, store_kwargs

N, CHUNK = 45, 8  # 6 chunks, the last one short (read by zarr)


def _filled(tmp_path, **kw) -> PairStore:
    store = PairStore.create(str(tmp_path / "p.zarr"), **store_kwargs(n=N, chunk=CHUNK, **kw))
    fill_with_index(store)
    return PairStore.open(store.uri)


def _zarr_chunk(store: PairStore, i: int) -> list[np.ndarray]:
    start, stop = store.chunk_bounds(i)
    return [store._arrays[name][start:stop] for name in ("x0", "x1", "y")]


def test_direct_reads_equal_zarr_reads(tmp_path):
    store = _filled(tmp_path)
    assert {"x0", "x1"} <= store._direct  # the default codecs: raw bytes + crc32c
    assert not is_plain(store._arrays["y"])  # labels are zstd-compressed: zarr reads them
    for i in range(store.n_chunks):
        got = store.read_chunk(i)
        start, stop = store.chunk_bounds(i)
        pool = [np.full((stop - start, 2), np.nan, np.float32) for _ in range(2)]
        pool.append(np.full(stop - start, -7, np.int64))
        store.read_chunk(i, out=pool)
        for a, b, c in zip(got, pool, _zarr_chunk(store, i), strict=True):
            assert np.array_equal(a, c) and np.array_equal(b, c)


def test_compressed_arrays_are_read_by_zarr(tmp_path):
    store = _filled(tmp_path, codecs={"x0": [ZstdCodec(level=1)]})
    assert "x0" not in store._direct and "x1" in store._direct
    for i in range(store.n_chunks):
        for a, b in zip(store.read_chunk(i), _zarr_chunk(store, i), strict=True):
            assert np.array_equal(a, b)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:10] + bytes([b[10] ^ 0xFF]) + b[11:], "x1 unreadable .*crc32c"),
        (lambda b: b[:-9], "x1 unreadable .*bytes, expected"),
        (lambda b: b + b"\0", "x1 unreadable .*bytes, expected"),
    ],
    ids=["flipped", "truncated", "extended"],
)
def test_damaged_objects_raise_instead_of_returning_numbers(tmp_path, damage, message):
    store = _filled(tmp_path)
    path = tmp_path / "p.zarr" / store.chunk_key("x1", 2)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ChunkCorruptError, match=f"chunk 2 is corrupt: {message}"):
        store.read_chunk(2)
    out = [np.empty((CHUNK, 2), np.float32)] * 2 + [np.empty(CHUNK, np.int64)]
    with pytest.raises(ValueError, match=r"crc32c|bytes, expected"):
        read_plain_chunk(path, out[1])
    store.read_chunk(1)  # its neighbours are fine


def test_a_missing_object_is_named(tmp_path):
    store = _filled(tmp_path)
    (tmp_path / "p.zarr" / store.chunk_key("x0", 4)).unlink()
    with pytest.raises(ChunkCorruptError, match="chunk 4 is corrupt: x0 data is missing"):
        store.read_chunk(4)
