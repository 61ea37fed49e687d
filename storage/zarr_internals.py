"""The only module that uses zarr internals: everything here may change in a zarr release.

rectiflow needs three things zarr's public API does not offer:

- run several requests at once on zarr's own event loop (the loop its stores' sessions live on);
  on object storage each request is a round trip, and one batch of six costs about one;
- read a block of rows into a caller's buffer (reused buffers avoid a page fault per 4 KiB of
  fresh memory on every read);
- the key of one chunk's object inside the store (to check that it exists, or read its file).

If an upgrade renames or changes any of them, importing this module fails with an error naming
the zarr version (``tests/storage/test_zarr_internals.py`` checks each name, its parameters and
a round trip through it).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any

import numpy as np
import zarr

TESTED_WITH = "3.1.6"  # the version pinned in pyproject.toml


class ZarrInternalsError(ImportError):
    """The installed zarr lacks an internal rectiflow relies on (see storage.zarr_internals)."""

    def __init__(self, what: str):
        super().__init__(
            f"zarr {zarr.__version__} changed an internal rectiflow uses: {what}. rectiflow is "
            f"tested with zarr=={TESTED_WITH} (pyproject.toml): install that version, or adapt "
            "storage/zarr_internals.py and run tests/storage/test_zarr_internals.py."
        )


try:
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.buffer.cpu import NDBuffer
    from zarr.core.indexing import BasicIndexer
    from zarr.core.metadata import ArrayV3Metadata
    from zarr.core.sync import sync
except ImportError as e:
    raise ZarrInternalsError(f"cannot import {e.name or e}: {e}") from e

# Name -> parameters it must accept, of everything used below.
REQUIRED = {
    "zarr.AsyncArray._get_selection": (
        zarr.AsyncArray,
        "_get_selection",
        {"indexer", "out", "prototype"},
    ),
    "zarr.core.indexing.BasicIndexer": (
        BasicIndexer,
        "__init__",
        {"selection", "shape", "chunk_grid"},
    ),
    "zarr.core.sync.sync": (sync, None, {"coro"}),
    "NDBuffer.from_numpy_array": (NDBuffer, "from_numpy_array", {"array_like"}),
    "ArrayV3Metadata.encode_chunk_key": (ArrayV3Metadata, "encode_chunk_key", {"chunk_coords"}),
}


def check_internals() -> None:
    """Raise ZarrInternalsError unless every internal in :data:`REQUIRED` has its parameters."""
    for name, (owner, attr, params) in REQUIRED.items():
        target = owner if attr is None else getattr(owner, attr, None)
        if target is None:
            raise ZarrInternalsError(f"{name} is gone")
        have = set(inspect.signature(target).parameters)
        if not params <= have:
            raise ZarrInternalsError(f"{name} lacks parameters {sorted(params - have)}")


check_internals()


def gather(*coroutines: Coroutine[Any, Any, Any], settled: bool = False) -> list[Any]:
    """Run coroutines concurrently on zarr's event loop and wait for all of them.

    Args:
        coroutines: zarr requests (``AsyncArray.setitem``, ``Store.exists``, :func:`read_rows`...).
        settled: return each failure as its exception instead of raising the first one.

    Returns:
        Their results, in order.
    """

    async def together() -> list[Any]:
        return await asyncio.gather(*coroutines, return_exceptions=settled)

    return sync(together())


def read_rows(array: zarr.Array, start: int, stop: int, out: np.ndarray) -> Coroutine:
    """A coroutine that decodes rows [start, stop) of ``array`` into ``out`` (checksums checked).

    Args:
        array: a zarr array.
        start, stop: the rows, along the first axis.
        out: C-contiguous (stop - start, *array.shape[1:]) of the array's dtype, filled in place.
    """
    a = array.async_array
    return a._get_selection(
        BasicIndexer(slice(start, stop), a.shape, a.metadata.chunk_grid),
        out=NDBuffer.from_numpy_array(out),
        prototype=default_buffer_prototype(),
    )


def chunk_key(array: zarr.Array, coords: tuple[int, ...]) -> str:
    """Key of the chunk at grid ``coords`` relative to the array, e.g. ``c/3/0/0/0``."""
    return array.metadata.encode_chunk_key(coords)
