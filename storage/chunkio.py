"""Reading and writing one chunk of a pair store's x0, x1, y arrays (the bytes side of PairStore).

Reads verify presence and checksums and never return numbers from a damaged object; writes
put the data and the NFE counter down before the done marker. Both batch their requests on zarr's
event loop, because on object storage each request is a round trip.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.core.buffer.cpu import NDBuffer
from zarr.core.indexing import BasicIndexer
from zarr.core.sync import sync

from storage.fastread import map_plain_chunk, read_plain_chunk, read_zstd_chunk
from storage.layout import DATA_ARRAYS, ChunkCorruptError, PairStoreError

if TYPE_CHECKING:
    from storage.pairstore import PairStore

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]
T = TypeVar("T")
DTYPES = (np.float32, np.float32, np.int64)


def read_arrays(store: PairStore, i: int, out: Sequence[np.ndarray] | None = None) -> Arrays:
    """Chunk ``i``'s x0, x1, y (into ``out`` when given); see :meth:`PairStore.read_chunk`."""
    start, stop = store.chunk_bounds(i)
    arrays = [store._arrays[name] for name in DATA_ARRAYS]
    if out is None:
        out = [np.empty(w, d) for w, d in zip(chunk_shapes(store, i), DTYPES, strict=True)]
    else:
        check_out(store, i, out)
    direct = _direct_kinds(store, i)
    for name, o in zip(DATA_ARRAYS, out, strict=True):
        if name in direct:
            read_direct(store, i, name, o)
    rest = [(n, a, o) for n, a, o in zip(DATA_ARRAYS, arrays, out, strict=True) if n not in direct]
    if not rest:  # all read directly: skip zarr's event loop (a round trip costs ~1 ms)
        return out[0], out[1], out[2]
    zstore = store._group.store
    # The existence checks and the reads go out at once: on object storage each is a round
    # trip, and one batch of six costs about as much as one.
    settled = sync(
        _gather_settled(
            *(zstore.exists(store.chunk_key(name, i)) for name, _, _ in rest),
            *(
                a.async_array._get_selection(
                    BasicIndexer(slice(start, stop), a.shape, a.metadata.chunk_grid),
                    out=NDBuffer.from_numpy_array(o),
                    prototype=default_buffer_prototype(),
                )
                for _, a, o in rest
            ),
        )
    )
    names = [name for name, _, _ in rest]
    for name, present in zip(names, settled[: len(rest)], strict=True):
        if isinstance(present, BaseException):
            raise present
        # write_empty_chunks=True at creation, so a missing object means missing data, not a
        # chunk equal to the fill value; reading it would silently return zeros.
        if not present:
            raise ChunkCorruptError(store.uri, i, f"{name} data is missing")
    for name, e in zip(names, settled[len(rest) :], strict=True):
        if isinstance(e, Exception):  # crc32c mismatch, truncated or undecodable object
            raise ChunkCorruptError(store.uri, i, f"{name} unreadable ({e})") from e
    return out[0], out[1], out[2]


def view_arrays(store: PairStore, i: int) -> Arrays:
    """Chunk ``i``'s x0, x1, y for reading only, checksums verified.

    Where the store allows direct reads, plain objects are memory-mapped (read-only views, no
    copy: storage.fastread.map_plain_chunk) and zstd ones decoded into fresh arrays; anything
    else is read as :func:`read_arrays` does.
    """
    direct = _direct_kinds(store, i)
    if len(direct) < len(DATA_ARRAYS):  # some array needs zarr: read the chunk the usual way
        return read_arrays(store, i)
    views = []
    for name, shape, dtype in zip(DATA_ARRAYS, chunk_shapes(store, i), DTYPES, strict=True):
        if direct[name] == "plain":
            views.append(
                _direct(store, i, name, partial(map_plain_chunk, shape=shape, dtype=dtype))
            )
        else:
            views.append(np.empty(shape, dtype))
            read_direct(store, i, name, views[-1])
    return views[0], views[1], views[2]


def read_direct(store: PairStore, i: int, name: str, out: np.ndarray) -> None:
    """Fill ``out`` from chunk ``i``'s file of ``name`` (local, plain or zstd, full chunk)."""
    read = read_plain_chunk if store._direct[name] == "plain" else read_zstd_chunk
    _direct(store, i, name, lambda path: read(path, out))


def _direct_kinds(store: PairStore, i: int) -> dict[str, str]:
    """Name -> "plain" | "zstd" of the arrays whose chunk ``i`` is read from its file: only full
    chunks are (a short last chunk's object holds a padded chunk, which zarr trims)."""
    start, stop = store.chunk_bounds(i)
    return store._direct if stop - start == store.chunk else {}


def _direct(store: PairStore, i: int, name: str, read: Callable[[str], T]) -> T:
    """``read(path)`` of chunk ``i``'s object of ``name``, its failures as ChunkCorruptError."""
    path = os.path.join(store._root, *store.chunk_key(name, i).split("/"))
    try:
        return read(path)
    except FileNotFoundError:
        raise ChunkCorruptError(store.uri, i, f"{name} data is missing") from None
    except (OSError, ValueError) as e:  # size, crc32c or decoding mismatch
        raise ChunkCorruptError(store.uri, i, f"{name} unreadable ({e})") from e


def chunk_shapes(store: PairStore, i: int) -> list[tuple[int, ...]]:
    """Shapes of chunk ``i``'s x0, x1 and y (the last chunk may be short)."""
    start, stop = store.chunk_bounds(i)
    return [(stop - start, *store.sample_shape)] * 2 + [(stop - start,)]


def check_out(store: PairStore, i: int, out: Sequence[np.ndarray]) -> None:
    """Refuse ``out`` buffers that are not exactly chunk ``i``'s (x0, x1, y) shapes and dtypes."""
    want = chunk_shapes(store, i)
    ok = len(out) == 3 and all(
        isinstance(a, np.ndarray) and a.shape == w and a.dtype == d and a.flags.c_contiguous
        for a, w, d in zip(out, want, DTYPES, strict=False)
    )
    if not ok:
        raise PairStoreError(
            f"out must be C-contiguous (x0, x1, y) arrays of shapes {want} and dtypes "
            f"float32, float32, int64 for chunk {i}"
        )


def write_arrays(
    store: PairStore, i: int, x0: np.ndarray, x1: np.ndarray, y: np.ndarray, nfe: int
) -> None:
    """Write chunk ``i``'s data and NFE, then its done marker; see :meth:`PairStore.write_chunk`."""
    start, stop = store.chunk_bounds(i)
    m = stop - start
    want = {"x0": (m, *store.sample_shape), "x1": (m, *store.sample_shape), "y": (m,)}
    for name, arr in zip(DATA_ARRAYS, (x0, x1, y), strict=True):
        if tuple(arr.shape) != want[name]:
            raise PairStoreError(f"chunk {i}: {name} must have shape {want[name]}, got {arr.shape}")
    if not np.isfinite(x1).all():
        raise ChunkCorruptError(store.uri, i, "x1 has NaN or Inf; the solve diverged")
    values = {
        "x0": np.asarray(x0, dtype=np.float32),
        "x1": np.asarray(x1, dtype=np.float32),
        "y": np.asarray(y, dtype=np.int64),
    }
    # The three objects and the NFE counter are encoded and written concurrently on zarr's
    # event loop (measured: faster than sequential writes; on object storage one round trip
    # instead of four); all finish before the marker is set.
    arrays = {k: store._arrays[k].async_array for k in (*DATA_ARRAYS, "nfe")}
    writes = [arrays[k].setitem(slice(start, stop), v) for k, v in values.items()]
    sync(_gather([*writes, arrays["nfe"].setitem(i, int(nfe))]))
    store._arrays["done"][i] = True


async def _gather_settled(*coroutines) -> list:
    """Await coroutines concurrently; each result is its value or the exception it raised."""
    return await asyncio.gather(*coroutines, return_exceptions=True)


async def _gather(coroutines) -> list:
    """Await coroutines concurrently (on zarr's event loop, via ``zarr.core.sync.sync``)."""
    return await asyncio.gather(*coroutines)
