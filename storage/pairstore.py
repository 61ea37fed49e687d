"""Handle on an ``rf-pairs/1`` pair store: create, open, resume, read and write whole chunks.

The chunk is the unit of work: a writer owns whole chunks, so any number of processes may write one
store at once. Group attributes are a single JSON document (last writer wins), so only the process
that creates or finalizes the store (the coordinator) writes them; workers open with ``mode="r+"``
and write arrays only. The format is described in docs/pair-store.md and :mod:`storage.layout`;
every chunk read and write goes through :class:`storage.chunkio.ChunkFiles`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from storage.chunkio import ChunkFiles, ChunkGrid
from storage.layout import (
    ChunkCorruptError,
    PairStoreError,
    StoreExistsError,
    canonical_json,
    digest_attrs,
    format_ranges,
    identity,
    make_attrs,
    resolve_codecs,
    solver_spec,
)
from storage.location import create_group, exists, looks_like_partial_store, open_group

__all__ = ["ChunkCorruptError", "PairStore", "PairStoreError", "StoreExistsError", "format_ranges"]


class PairStore:
    """Handle on one ``rf-pairs/1`` store. Create with :meth:`create`, open with :meth:`open`.

    Attributes:
        uri: the store's fsspec URL or local path.
        mode: "r" (read only) or "r+" (write chunks).
    """

    def __init__(self, uri: str, group: zarr.Group, mode: str):
        self.uri, self.mode = uri, mode
        self._attrs = dict(group.attrs)
        self._grid = ChunkGrid(self.n, self.chunk, self.sample_shape)
        self._attach(group)

    def _attach(self, group: zarr.Group) -> None:
        self._group, self._pid = group, os.getpid()
        self._chunk_files = ChunkFiles(self.uri, group, self._grid)

    def _reopen_after_fork(self) -> None:
        """Reopen in a forked child (DataLoader worker): remote sessions need the parent's loop."""
        if self._pid != os.getpid():
            self._attach(open_group(self.uri, self.mode))

    @property
    def _files(self) -> ChunkFiles:
        """This handle's chunk objects (reopened after a fork)."""
        self._reopen_after_fork()
        return self._chunk_files

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def create(
        cls, uri: str, *, codecs: Mapping[str, Sequence[Any]] | None = None, **recipe: Any
    ) -> PairStore:
        """Create an empty store; refuses a location that already holds anything.

        Args:
            uri: local path or fsspec URL of the new store (e.g. ``runs/pairs.zarr``, ``s3://b/p.zarr``).
            codecs: optional {array: [compressor, ...]} for x0/x1/y; crc32c is always appended.
            **recipe: what the store holds, as :func:`storage.layout.make_attrs` takes it (n,
                chunk, sample_shape, seed, source, solver, dataset, num_classes, solver_choice).

        Returns a handle opened with mode "r+". Raises PairStoreError on bad arguments, an
        existing location, or an unwritable location. Local paths are claimed atomically (mkdir),
        so processes may race through :meth:`open_or_create`; on object stores, create from one
        coordinator before the workers.
        """
        return cls(uri, create_group(uri, make_attrs(**recipe), resolve_codecs(codecs)), "r+")

    @classmethod
    def open(cls, uri: str, mode: str = "r") -> PairStore:
        """Open an existing store read-only ("r") or to write chunks ("r+"); PairStoreError for a
        bad mode, nothing at ``uri``, or not an ``rf-pairs/1`` store."""
        return cls(uri, open_group(uri, mode), mode)

    @classmethod
    def open_or_create(cls, uri: str, **kwargs: Any) -> PairStore:
        """Resume the store at ``uri`` if it was made the same way, else create it.

        Takes the arguments of :meth:`create`. An existing store must match in source checkpoint,
        solver, sample shape, seed, n, chunk, dtype and num_classes; otherwise this refuses with an
        error naming both sides and touches nothing.
        """
        if not exists(uri):
            try:
                return cls.create(uri, **kwargs)
            except StoreExistsError:
                pass  # a concurrent creator won the race: open what it makes
        store = cls.open_when_created(uri)
        want = identity(make_attrs(**{k: v for k, v in kwargs.items() if k != "codecs"}))
        have = identity(store.attrs)
        diffs = "; ".join(
            f"{k}: store has {have[k]!r}, this run asks for {want[k]!r}"
            for k in want
            if have[k] != want[k]
        )
        if diffs:
            raise PairStoreError(
                f"cannot resume pair store {uri}: it was made differently ({diffs}). "
                "Use a new store URI; nothing was changed."
            )
        return store

    @classmethod
    def open_when_created(cls, uri: str, timeout: float = 10.0) -> PairStore:
        """Open for writing, waiting briefly for a concurrent creator to write the attrs."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return cls.open(uri, mode="r+")
            except PairStoreError:
                if time.monotonic() > deadline or not looks_like_partial_store(uri):
                    raise
                time.sleep(0.1)

    # ---- metadata -----------------------------------------------------------------------------
    @property
    def attrs(self) -> dict[str, Any]:
        """A copy of the group attributes as read at open (or last finalize)."""
        return json.loads(json.dumps(self._attrs))

    n = property(lambda self: int(self._attrs["n"]))
    chunk = property(lambda self: int(self._attrs["chunk"]))
    seed = property(lambda self: int(self._attrs["seed"]))
    num_classes = property(lambda self: int(self._attrs["num_classes"]))
    sample_shape = property(lambda self: tuple(self._attrs["sample_shape"]))
    # A SolverSpec with batch_size set; keys added since the store was written read as defaults.
    solver = property(lambda self: solver_spec(self._attrs["solver"]))
    source = property(lambda self: dict(self._attrs["source"]))
    n_chunks = property(lambda self: self._grid.n_chunks)

    @property
    def is_finalized(self) -> bool:
        """True once the coordinator checked every chunk and wrote ``complete`` + ``digest``."""
        return bool(self._attrs.get("complete")) and bool(self._attrs.get("digest"))

    @property
    def is_complete(self) -> bool:
        """True when every chunk's done marker is set (finalize may still be pending)."""
        return bool(self.done_mask().all())

    def chunk_bounds(self, i: int) -> tuple[int, int]:
        """Sample range [start, stop) of chunk ``i``; the last chunk may be shorter."""
        return self._grid.bounds(i)

    def chunk_key(self, name: str, i: int) -> str:
        """Key of chunk ``i`` of array ``name`` inside the store, e.g. ``x0/c/3/0/0/0``."""
        return self._files.key(name, i)

    def chunk_exists(self, name: str, i: int) -> bool:
        return self._files.exists(name, i)

    def require_writable(self) -> None:
        """Raise PairStoreError unless this handle may write (opened with mode "r+")."""
        if self.mode != "r+":
            raise PairStoreError(f"pair store {self.uri} is open read-only; open with mode='r+'")

    # ---- markers ------------------------------------------------------------------------------
    def done_mask(self) -> np.ndarray:
        """(n_chunks,) bool: which chunks are fully written."""
        return self._files.done_mask()

    def is_done(self, i: int) -> bool:
        """Chunk ``i``'s done marker; ChunkCorruptError if the marker object is unreadable."""
        return self._files.is_done(i)

    def missing_chunks(self) -> list[int]:
        """Indices of chunks whose done marker is unset."""
        return [int(i) for i in np.flatnonzero(~self.done_mask())]

    def nfe(self) -> np.ndarray:
        """(n_chunks,) int: model evaluations spent on each chunk (0 where not generated)."""
        return self._files.nfe()

    def clear_marker(self, i: int) -> None:
        """Unset chunk ``i``'s done marker so generation redoes it."""
        self.require_writable()
        self._files.clear_done(i)

    # ---- data ---------------------------------------------------------------------------------
    def read_chunk(
        self,
        i: int,
        require_done: bool = True,
        out: Sequence[np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Read chunk ``i`` whole, verifying checksums and presence.

        Args:
            i: chunk index.
            require_done: refuse a chunk whose done marker is unset.
            out: optional (x0, x1, y) arrays of exactly the chunk's shapes and dtypes, filled in
                place (reused buffers spare the page faults of fresh memory on every read).

        Returns:
            x0 (m, *sample_shape) float32, x1 (m, *sample_shape) float32, y (m,) int64, m <= chunk
            (the ``out`` arrays when given).

        Raises:
            PairStoreError: marker unset (with ``require_done``), or ``out`` of the wrong shape.
            ChunkCorruptError: checksum mismatch, undecodable bytes, or data missing.
        """
        return self._files.read(i, out, require_done)

    def view_chunk(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chunk ``i``'s x0, x1, y to look at, checksums verified, done marker not read (local
        chunks are memory-mapped where their codecs allow: read-only arrays, no copy)."""
        return self._files.view(i)

    def write_chunk(self, i: int, x0: np.ndarray, x1: np.ndarray, y: np.ndarray, nfe: int) -> None:
        """Write chunk ``i``'s data and NFE, then set its done marker (strictly after the data).

        Raises PairStoreError (read-only handle, wrong shapes) or ChunkCorruptError (NaN or Inf in
        x1: nothing is marked).
        """
        self.require_writable()
        self._files.write(i, x0, x1, y, nfe)

    # ---- completion (coordinator only) --------------------------------------------------------
    def chunk_digest(self, i: int) -> str:
        """sha256 of chunk ``i``'s decoded x0, x1, y bytes; raises on corrupt or non-finite data."""
        return self._files.digest(i)

    def compute_digest(self, chunk_digests: Sequence[str] | None = None) -> str:
        """Digest over the identity attrs and every chunk's sha256 (reads the store if not given).

        Args:
            chunk_digests: :meth:`chunk_digest` of every chunk, in order, when already computed.
        """
        if chunk_digests is None:
            chunk_digests = [self.chunk_digest(i) for i in range(self.n_chunks)]
        return hashlib.sha256(
            canonical_json({"attrs": digest_attrs(self._attrs), "chunks": list(chunk_digests)})
        ).hexdigest()

    def finalize(self) -> str:
        """Check every chunk, then set ``complete=True`` and ``digest`` (sha256 hex, returned).

        Coordinator only. Raises PairStoreError (chunks missing, read-only handle) or
        ChunkCorruptError (a bad chunk).
        """
        self.require_writable()
        missing = self.missing_chunks()
        if missing:
            raise PairStoreError(
                f"cannot finalize pair store {self.uri}: chunks {format_ranges(missing)} "
                "are not generated yet"
            )
        digest = self.compute_digest()
        self.set_completion(True, digest)
        return digest

    def set_completion(self, complete: bool, digest: str | None) -> None:
        """Write the ``complete`` and ``digest`` attrs (coordinator only)."""
        self.require_writable()
        self._reopen_after_fork()
        self._group = self._group.update_attributes({"complete": complete, "digest": digest})
        self._attrs.update({"complete": complete, "digest": digest})

    def __repr__(self) -> str:
        return f"PairStore({self.uri!r}, n={self.n}, chunk={self.chunk}, mode={self.mode!r})"
