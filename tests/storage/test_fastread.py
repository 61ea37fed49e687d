"""Direct chunk reads (storage.fastread) return exactly what zarr returns, and fail as loudly."""

from __future__ import annotations

import google_crc32c
import numpy as np
import pytest
import zarr
from zarr.codecs import GzipCodec, ZstdCodec

from storage.chunkio import ChunkFiles, ChunkGrid
from storage.fastread import direct_kind, map_plain_chunk, read_plain_chunk, read_zstd_chunk
from storage.layout import ChunkCorruptError
from storage.pairstore import PairStore
from tests.storage.storekit import fill_with_index, mappings_of, store_kwargs

N, CHUNK = 45, 8  # 6 chunks, the last one short (read by zarr)


def _filled(tmp_path, **kw) -> PairStore:
    store = PairStore.create(str(tmp_path / "p.zarr"), **store_kwargs(n=N, chunk=CHUNK, **kw))
    fill_with_index(store)
    return PairStore.open(store.uri)


def _zarr_chunk(store: PairStore, i: int) -> list[np.ndarray]:
    start, stop = store.chunk_bounds(i)
    group = zarr.open_group(store.uri, mode="r")
    return [group[name][start:stop] for name in ("x0", "x1", "y")]


def _files(store: PairStore) -> ChunkFiles:
    """The store's chunk I/O as PairStore makes it (which arrays it reads straight from files)."""
    grid = ChunkGrid(store.n, store.chunk, store.sample_shape)
    return ChunkFiles(store.uri, zarr.open_group(store.uri, mode="r"), grid)


def _array(store: PairStore, name: str) -> zarr.Array:
    return zarr.open_group(store.uri, mode="r")[name]


def _pool(store: PairStore, i: int) -> list[np.ndarray]:
    """Out buffers for chunk ``i`` filled with values no chunk holds."""
    start, stop = store.chunk_bounds(i)
    pool = [np.full((stop - start, 2), np.nan, np.float32) for _ in range(2)]
    return [*pool, np.full(stop - start, -7, np.int64)]


def test_direct_reads_equal_zarr_reads(tmp_path):
    store = _filled(tmp_path)
    kinds = {name: direct_kind(_array(store, name)) for name in ("x0", "x1", "y")}
    assert kinds == {"x0": "plain", "x1": "plain", "y": "zstd"}  # the default codecs
    assert _files(store).direct.keys() == {"x0", "x1", "y"}
    for i in range(store.n_chunks):
        zarr_values = _zarr_chunk(store, i)
        pool = _pool(store, i)
        got = store.read_chunk(i, out=pool)
        fresh = store.read_chunk(i)
        viewed = store.view_chunk(i)
        for k in range(3):
            assert got[k] is pool[k]
            assert np.array_equal(got[k], zarr_values[k])
            assert np.array_equal(fresh[k], zarr_values[k])
            assert np.array_equal(viewed[k], zarr_values[k]) and viewed[k].dtype == got[k].dtype


def test_mapped_chunks_are_read_only_views_released_with_them(tmp_path):
    store = _filled(tmp_path)
    path = tmp_path / "p.zarr" / store.chunk_key("x1", 2)
    x1 = map_plain_chunk(path, (CHUNK, 2), np.float32)
    assert np.array_equal(x1, _zarr_chunk(store, 2)[1]) and mappings_of(path) == 1
    with pytest.raises(ValueError, match="read-only"):
        x1[0, 0] = 1.0  # the page cache is never written through a view
    rows = x1[2:4]
    del x1
    assert mappings_of(path) == 1  # a view keeps its mapping alive...
    assert np.array_equal(rows, _zarr_chunk(store, 2)[1][2:4])
    del rows
    assert mappings_of(path) == 0  # ...and the last one lets it go
    # A rewrite replaces the object by rename (zarr's local store): a mapping taken before it
    # keeps the old pages and can never see a half-written chunk.
    kept = map_plain_chunk(path, (CHUNK, 2), np.float32)
    before = kept.copy()
    zarr.open_group(store.uri, mode="r+")["x1"][2 * CHUNK : 3 * CHUNK] = -before
    assert np.array_equal(kept, before)
    assert np.array_equal(map_plain_chunk(path, (CHUNK, 2), np.float32), -before)


def test_other_codecs_are_read_by_zarr(tmp_path):
    store = _filled(tmp_path, codecs={"x0": [GzipCodec(level=1)], "x1": [ZstdCodec(level=1)]})
    assert direct_kind(_array(store, "x0")) is None and "x0" not in _files(store).direct
    assert direct_kind(_array(store, "x1")) == "zstd" and "x1" in _files(store).direct
    for i in range(store.n_chunks):
        got = store.read_chunk(i, out=_pool(store, i))
        for a, b, c in zip(got, _zarr_chunk(store, i), store.view_chunk(i), strict=True):
            assert np.array_equal(a, b) and np.array_equal(c, b)


def _flip(b: bytes) -> bytes:
    return b[:10] + bytes([b[10] ^ 0xFF]) + b[11:]


@pytest.mark.parametrize("name", ["x1", "y"])
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_flip, "crc32c"),
        (lambda b: b[:-9], "bytes, expected|crc32c"),
        (lambda b: b + b"\0", "bytes, expected|crc32c"),
    ],
    ids=["flipped", "truncated", "extended"],
)
def test_damaged_objects_raise_instead_of_returning_numbers(tmp_path, damage, message, name):
    store = _filled(tmp_path)
    path = tmp_path / "p.zarr" / store.chunk_key(name, 2)
    path.write_bytes(damage(path.read_bytes()))
    match = f"chunk 2 is corrupt: {name} unreadable .*({message})"
    with pytest.raises(ChunkCorruptError, match=match):
        store.read_chunk(2, out=_pool(store, 2))
    with pytest.raises(ChunkCorruptError, match=match):
        store.view_chunk(2)
    with pytest.raises(ValueError, match=message):
        if name == "y":
            read_zstd_chunk(path, np.empty(CHUNK, np.int64))
        else:
            read_plain_chunk(path, np.empty((CHUNK, 2), np.float32))
    if name == "x1":
        with pytest.raises(ValueError, match=message):
            map_plain_chunk(path, (CHUNK, 2), np.float32)
        assert mappings_of(path) == 0  # a refused mapping is not kept
    store.read_chunk(1, out=_pool(store, 1))  # its neighbours are fine


def test_undecodable_labels_with_a_valid_checksum_are_refused(tmp_path):
    store = _filled(tmp_path)
    path = tmp_path / "p.zarr" / store.chunk_key("y", 3)
    junk = b"not zstd at all"
    path.write_bytes(junk + google_crc32c.value(junk).to_bytes(4, "little"))
    with pytest.raises(ChunkCorruptError, match=r"chunk 3 is corrupt: y unreadable .*zstd"):
        store.read_chunk(3)


@pytest.mark.parametrize("name", ["x0", "y"])
def test_a_missing_object_is_named(tmp_path, name):
    store = _filled(tmp_path)
    (tmp_path / "p.zarr" / store.chunk_key(name, 4)).unlink()
    with pytest.raises(ChunkCorruptError, match=f"chunk 4 is corrupt: {name} data is missing"):
        store.read_chunk(4)
    with pytest.raises(ChunkCorruptError, match=f"chunk 4 is corrupt: {name} data is missing"):
        store.view_chunk(4)
