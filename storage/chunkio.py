"""The chunk objects of one pair store: reading and writing x0, x1, y, nfe and done, chunk by chunk.

:class:`ChunkFiles` is the one owner of chunk I/O; :class:`storage.pairstore.PairStore` makes one
per open handle (and process) and hands it what it needs. Reads verify presence and checksums and
never return numbers from a damaged object; writes put the data and the NFE counter down before
the done marker. Requests are batched on zarr's event loop (storage.zarr_internals), because on
object storage each one is a round trip. Full chunks of local stores are read straight from their
files (storage.fastread).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np
import zarr

from storage import zarr_internals
from storage.fastread import direct_kind, map_plain_chunk, read_plain_chunk, read_zstd_chunk
from storage.layout import DATA_ARRAYS, MARKER_ARRAYS, ChunkCorruptError, PairStoreError
from storage.location import filesystem, is_local

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray]
T = TypeVar("T")
DTYPES = (np.dtype(np.float32), np.dtype(np.float32), np.dtype(np.int64))


@dataclass(frozen=True)
class ChunkGrid:
    """Which samples each chunk holds: ``n`` samples of ``sample_shape``, ``chunk`` per chunk."""

    n: int
    chunk: int
    sample_shape: tuple[int, ...]

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n / self.chunk)

    def bounds(self, i: int) -> tuple[int, int]:
        """Sample range [start, stop) of chunk ``i``; the last chunk may be shorter."""
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= i < self.n_chunks:
            raise PairStoreError(f"chunk index must be an int in [0, {self.n_chunks}), got {i!r}")
        return int(i) * self.chunk, min((int(i) + 1) * self.chunk, self.n)

    def shapes(self, i: int) -> list[tuple[int, ...]]:
        """Shapes of chunk ``i``'s x0, x1 and y."""
        start, stop = self.bounds(i)
        return [(stop - start, *self.sample_shape)] * 2 + [(stop - start,)]


class ChunkFiles:
    """Reads and writes the chunk objects of one open store.

    Args:
        uri: the store's path or fsspec URL (named in errors; local ones allow direct reads).
        group: the store's zarr group, opened with the handle's mode.
        grid: the store's chunking.

    Attributes:
        direct: array name -> "plain" | "zstd" for the arrays whose full chunks are read straight
            from their local files (decided once here, not on every read).
    """

    def __init__(self, uri: str, group: zarr.Group, grid: ChunkGrid):
        self.uri, self.grid = uri, grid
        # Write every data chunk even when it equals the fill value (a runtime setting, not
        # stored): then "the object exists" means "was written", and missing data is detectable.
        full = {"write_empty_chunks": True}
        self._arrays = {name: group[name].with_config(full) for name in DATA_ARRAYS}
        self._arrays |= {name: group[name] for name in MARKER_ARRAYS}
        self._zstore = group.store
        self._fs, self._root = filesystem(uri)
        kinds = {n: direct_kind(self._arrays[n]) for n in DATA_ARRAYS} if is_local(uri) else {}
        self.direct = {n: k for n, k in kinds.items() if k is not None}

    # ---- where ----------------------------------------------------------------------------------
    def key(self, name: str, i: int) -> str:
        """Key of chunk ``i`` of array ``name`` inside the store, e.g. ``x0/c/3/0/0/0``."""
        arr = self._arrays[name]
        coords = (i,) + (0,) * (arr.ndim - 1) if name in DATA_ARRAYS else (i,)
        return f"{name}/{zarr_internals.chunk_key(arr, coords)}"

    def exists(self, name: str, i: int) -> bool:
        return self._fs.exists(f"{self._root.rstrip('/')}/{self.key(name, i)}")

    # ---- markers --------------------------------------------------------------------------------
    def done_mask(self) -> np.ndarray:
        """(n_chunks,) bool: which chunks are fully written."""
        try:
            return np.asarray(self._arrays["done"][:], dtype=bool)
        except Exception:  # a corrupt marker object: find and name it
            return np.array([self.is_done(i) for i in range(self.grid.n_chunks)], dtype=bool)

    def is_done(self, i: int) -> bool:
        """Chunk ``i``'s done marker; ChunkCorruptError if the marker object is unreadable."""
        self.grid.bounds(i)
        try:
            return bool(self._arrays["done"][i])
        except Exception as e:
            raise ChunkCorruptError(self.uri, i, f"done marker unreadable ({e})") from e

    def clear_done(self, i: int) -> None:
        self.grid.bounds(i)
        self._arrays["done"][i] = False

    def nfe(self) -> np.ndarray:
        """(n_chunks,) int: model evaluations spent on each chunk (0 where not generated)."""
        try:
            return np.asarray(self._arrays["nfe"][:], dtype=np.int64)
        except Exception as first:  # a corrupt counter object: find and name it
            for i in range(self.grid.n_chunks):
                try:
                    self._arrays["nfe"][i]
                except Exception as e:
                    raise ChunkCorruptError(self.uri, i, f"nfe counter unreadable ({e})") from e
            raise first

    # ---- data -----------------------------------------------------------------------------------
    def read(
        self, i: int, out: Sequence[np.ndarray] | None = None, require_done: bool = False
    ) -> Arrays:
        """Chunk ``i``'s x0, x1, y (into ``out`` when given); see :meth:`PairStore.read_chunk`."""
        if require_done and not self.is_done(i):
            raise PairStoreError(f"pair store {self.uri}: chunk {i} has not been generated yet")
        if out is None:
            out = [np.empty(s, d) for s, d in zip(self.grid.shapes(i), DTYPES, strict=True)]
        else:
            self._check_out(i, out)
        direct = self._direct_kinds(i)
        for name, o in zip(DATA_ARRAYS, out, strict=True):
            if name in direct:
                self._read_direct(i, name, o)
        rest = [(name, o) for name, o in zip(DATA_ARRAYS, out, strict=True) if name not in direct]
        if rest:  # all read directly: skip zarr's event loop (a round trip costs ~1 ms)
            self._read_by_zarr(i, rest)
        return out[0], out[1], out[2]

    def _read_by_zarr(self, i: int, todo: list[tuple[str, np.ndarray]]) -> None:
        start, stop = self.grid.bounds(i)
        # The existence checks and the reads go out at once: on object storage each is a round
        # trip, and one batch of six costs about as much as one.
        settled = zarr_internals.gather(
            *(self._zstore.exists(self.key(name, i)) for name, _ in todo),
            *(zarr_internals.read_rows(self._arrays[name], start, stop, o) for name, o in todo),
            settled=True,
        )
        names = [name for name, _ in todo]
        for name, present in zip(names, settled[: len(todo)], strict=True):
            if isinstance(present, BaseException):
                raise present
            # write_empty_chunks=True at creation, so a missing object means missing data, not a
            # chunk equal to the fill value; reading it would silently return zeros.
            if not present:
                raise ChunkCorruptError(self.uri, i, f"{name} data is missing")
        for name, e in zip(names, settled[len(todo) :], strict=True):
            if isinstance(e, Exception):  # crc32c mismatch, truncated or undecodable object
                raise ChunkCorruptError(self.uri, i, f"{name} unreadable ({e})") from e

    def digest(self, i: int) -> str:
        """sha256 of done chunk ``i``'s decoded x0, x1, y bytes; raises on corrupt or non-finite
        data."""
        x0, x1, y = self.read(i, require_done=True)
        if not np.isfinite(x1).all():
            raise ChunkCorruptError(self.uri, i, "x1 has NaN or Inf")
        h = hashlib.sha256()
        for arr in (x0, x1, y):
            h.update(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
        return h.hexdigest()

    def view(self, i: int) -> Arrays:
        """Chunk ``i``'s x0, x1, y for reading only, checksums verified.

        Where the store allows direct reads, plain objects are memory-mapped (read-only views, no
        copy: storage.fastread.map_plain_chunk) and zstd ones decoded into fresh arrays; anything
        else is read as :meth:`read` does.
        """
        direct = self._direct_kinds(i)
        if len(direct) < len(DATA_ARRAYS):  # some array needs zarr: read the chunk the usual way
            return self.read(i)
        views = []
        for name, shape, dtype in zip(DATA_ARRAYS, self.grid.shapes(i), DTYPES, strict=True):
            if direct[name] == "plain":
                mapped = partial(map_plain_chunk, shape=shape, dtype=dtype)
                views.append(self._open(i, name, mapped))
            else:
                views.append(np.empty(shape, dtype))
                self._read_direct(i, name, views[-1])
        return views[0], views[1], views[2]

    def write(self, i: int, x0: np.ndarray, x1: np.ndarray, y: np.ndarray, nfe: int) -> None:
        """Write chunk ``i``'s data and NFE, then its done marker (see PairStore.write_chunk)."""
        start, stop = self.grid.bounds(i)
        for name, arr, want in zip(DATA_ARRAYS, (x0, x1, y), self.grid.shapes(i), strict=True):
            if tuple(arr.shape) != want:
                raise PairStoreError(f"chunk {i}: {name} must have shape {want}, got {arr.shape}")
        if not np.isfinite(x1).all():
            raise ChunkCorruptError(self.uri, i, "x1 has NaN or Inf; the solve diverged")
        values = [np.asarray(a, dtype=d) for a, d in zip((x0, x1, y), DTYPES, strict=True)]
        # The three objects and the NFE counter are encoded and written concurrently on zarr's
        # event loop (measured: faster than sequential writes; on object storage one round trip
        # instead of four); all finish before the marker is set.
        arrays = [self._arrays[name].async_array for name in DATA_ARRAYS]
        writes = [a.setitem(slice(start, stop), v) for a, v in zip(arrays, values, strict=True)]
        zarr_internals.gather(*writes, self._arrays["nfe"].async_array.setitem(i, int(nfe)))
        self._arrays["done"][i] = True

    # ---- direct reads of local files ------------------------------------------------------------
    def _direct_kinds(self, i: int) -> dict[str, str]:
        """:attr:`direct` for a full chunk ``i``, else nothing: a short last chunk's object holds a
        padded chunk, which zarr trims."""
        start, stop = self.grid.bounds(i)
        return self.direct if stop - start == self.grid.chunk else {}

    def _read_direct(self, i: int, name: str, out: np.ndarray) -> None:
        """Fill ``out`` from chunk ``i``'s file of ``name`` (local, plain or zstd, full chunk)."""
        read = read_plain_chunk if self.direct[name] == "plain" else read_zstd_chunk
        self._open(i, name, lambda path: read(path, out))

    def _open(self, i: int, name: str, read: Callable[[str], T]) -> T:
        """``read(path)`` of chunk ``i``'s file of ``name``, its failures as ChunkCorruptError."""
        path = os.path.join(self._root, *self.key(name, i).split("/"))
        try:
            return read(path)
        except FileNotFoundError:
            raise ChunkCorruptError(self.uri, i, f"{name} data is missing") from None
        except (OSError, ValueError) as e:  # size, crc32c or decoding mismatch
            raise ChunkCorruptError(self.uri, i, f"{name} unreadable ({e})") from e

    def _check_out(self, i: int, out: Sequence[np.ndarray]) -> None:
        """Refuse ``out`` buffers that are not exactly chunk ``i``'s x0, x1, y shapes and dtypes."""
        want = self.grid.shapes(i)
        ok = len(out) == 3 and all(
            isinstance(a, np.ndarray) and a.shape == w and a.dtype == d and a.flags.c_contiguous
            for a, w, d in zip(out, want, DTYPES, strict=False)
        )
        if not ok:
            raise PairStoreError(
                f"out must be C-contiguous (x0, x1, y) arrays of shapes {want} and dtypes "
                f"float32, float32, int64 for chunk {i}"
            )
