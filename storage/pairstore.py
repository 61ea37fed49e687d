"""Handle on an ``rf-pairs/1`` pair store: create, open, resume, read and write whole chunks.

The chunk is the unit of work: a writer owns whole chunks, so any number of processes may write one
store at once. Group attributes are a single JSON document (last writer wins), so only the process
that creates or finalizes the store (the coordinator) writes them; workers open with ``mode="r+"``
and write arrays only. The format itself is described in :mod:`storage.layout`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec
import numpy as np
import zarr

from rf_core.solver_spec import SolverSpec
from storage.chunkio import read_arrays, write_arrays
from storage.fastread import direct_kind
from storage.layout import (
    DATA_ARRAYS,
    SCHEMA,
    ChunkCorruptError,
    PairStoreError,
    StoreExistsError,
    canonical_json,
    create_arrays,
    digest_attrs,
    format_ranges,
    identity,
    make_attrs,
    resolve_codecs,
    solver_spec,
)
from storage.location import (
    access_error,
    claim_location,
    exists,
    filesystem,
    is_local,
    looks_like_partial_store,
    zarr_store,
)

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
        self._attach(group)

    def _attach(self, group: zarr.Group) -> None:
        self._group, self._pid = group, os.getpid()
        # Write every data chunk even when it equals the fill value (a runtime setting, not stored):
        # then "the object exists" means "was written", and missing data is detectable.
        full = {"write_empty_chunks": True}
        self._zarrays = {name: group[name].with_config(full) for name in DATA_ARRAYS}
        self._zarrays |= {name: group[name] for name in ("done", "nfe")}
        self._filesystem, self._root = filesystem(self.uri)
        # Arrays whose full chunks are read straight from their files (see storage.fastread).
        local = is_local(self.uri)
        # Name -> "plain" | "zstd", decided once per open rather than on every chunk read.
        kinds = {n: direct_kind(self._zarrays[n]) for n in DATA_ARRAYS} if local else {}
        self._direct = {n: k for n, k in kinds.items() if k is not None}

    def _reattach_after_fork(self) -> None:
        """Reopen in a forked child (e.g. a DataLoader worker): remote filesystem sessions belong
        to the parent's event loops, which do not exist in the child."""
        if self._pid != os.getpid():
            store = zarr_store(self.uri, read_only=self.mode == "r")
            self._attach(zarr.open_group(store, mode=self.mode))

    @property
    def _arrays(self) -> dict[str, zarr.Array]:
        self._reattach_after_fork()
        return self._zarrays

    @property
    def _fs(self) -> fsspec.AbstractFileSystem:
        self._reattach_after_fork()
        return self._filesystem

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        uri: str,
        n: int,
        chunk: int,
        sample_shape: Sequence[int],
        seed: int,
        source: Mapping[str, Any],
        solver: SolverSpec | Mapping[str, Any],
        dataset: str,
        num_classes: int,
        codecs: Mapping[str, Sequence[Any]] | None = None,
    ) -> PairStore:
        """Create an empty store; refuses a location that already holds anything.

        Args:
            uri: local path or fsspec URL of the new store (e.g. ``runs/pairs.zarr``, ``s3://b/p.zarr``).
            n: number of pairs (> 0).
            chunk: pairs per chunk, the unit of work and resume (> 0).
            sample_shape: shape of one sample, e.g. (1, 28, 28).
            seed: base seed; chunk i's noise and labels depend on (seed, i) only.
            source: {model_id, model_uri, run_id, checkpoint_sha256, k} of the generating model.
            solver: a SolverSpec, or its dict (``SolverSpec.from_dict``); an unset batch_size
                means one solve per chunk.
            dataset: name of the data the source model was trained on.
            num_classes: labels are drawn uniformly from [0, num_classes); 0 = unconditional (-1).
            codecs: optional {array: [compressor, ...]} for x0/x1/y; crc32c is always appended.

        Returns:
            A handle opened with mode "r+".

        Raises:
            PairStoreError: on bad arguments, an existing location, or an unwritable location.

        Creating is atomic for local paths (the directory is claimed with mkdir), so several
        processes may race through :meth:`open_or_create` on one local store; on object stores
        create it from one coordinator before starting workers.
        """
        attrs = make_attrs(n, chunk, sample_shape, seed, source, solver, dataset, num_classes)
        compressors = resolve_codecs(codecs)
        if exists(uri):
            raise StoreExistsError(
                f"cannot create pair store at {uri}: something already exists there. Open it with "
                "PairStore.open / open_or_create to resume, or choose a new URI."
            )
        try:
            claim_location(uri)
            group = zarr.open_group(zarr_store(uri, read_only=False), mode="w-", zarr_format=3)
            create_arrays(group, attrs, compressors)
            # Attrs last, in ONE write of zarr.json: a store without its schema attr is never
            # mistaken for a usable one. (zarr's ``attrs.update`` writes once per key, so a
            # concurrent opener could see the schema before the solver.)
            group = group.update_attributes(attrs)
        except (
            FileExistsError,
            zarr.errors.ContainsGroupError,
            zarr.errors.ContainsArrayError,
        ) as e:
            raise StoreExistsError(
                f"cannot create pair store at {uri}: it already exists (an empty folder counts: "
                "remove it or choose a new URI)"
            ) from e
        except PermissionError as e:
            raise access_error(uri, e) from e
        except OSError as e:
            raise PairStoreError(
                f"cannot create pair store at {uri}: location not writable ({e})"
            ) from e
        return cls(uri, group, "r+")

    @classmethod
    def open(cls, uri: str, mode: str = "r") -> PairStore:
        """Open an existing store read-only ("r") or to write chunks ("r+").

        Raises:
            PairStoreError: bad mode, nothing at ``uri``, or not an ``rf-pairs/1`` store.
        """
        if mode not in ("r", "r+"):
            raise PairStoreError(f"mode must be 'r' or 'r+', got {mode!r}")
        # Look before opening: a writable LocalStore would create the directory it opens.
        if not exists(uri):
            raise PairStoreError(f"no pair store at {uri}: nothing exists there")
        try:
            group = zarr.open_group(zarr_store(uri, read_only=mode == "r"), mode=mode)
        except PermissionError as e:
            raise access_error(uri, e) from e
        except (zarr.errors.GroupNotFoundError, OSError) as e:
            raise PairStoreError(f"no pair store at {uri}: {type(e).__name__}: {e}") from e
        schema = group.attrs.get("schema")
        missing = [a for a in (*DATA_ARRAYS, "done", "nfe") if a not in group]
        if schema != SCHEMA or missing:
            raise PairStoreError(
                f"{uri} is not a {SCHEMA} pair store (schema={schema!r}, missing arrays={missing})"
            )
        return cls(uri, group, mode)

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
        store = cls._open_when_created(uri)
        want = identity(make_attrs(**{k: v for k, v in kwargs.items() if k != "codecs"}))
        have = identity(store.attrs)
        diffs = [
            f"{k}: store has {have[k]!r}, this run asks for {want[k]!r}"
            for k in want
            if have[k] != want[k]
        ]
        if diffs:
            raise PairStoreError(
                f"cannot resume pair store {uri}: it was made differently ("
                + "; ".join(diffs)
                + "). Use a new store URI; nothing was changed."
            )
        return store

    @classmethod
    def _open_when_created(cls, uri: str, timeout: float = 10.0) -> PairStore:
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

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n / self.chunk)

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
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= i < self.n_chunks:
            raise PairStoreError(f"chunk index must be an int in [0, {self.n_chunks}), got {i!r}")
        return int(i) * self.chunk, min((int(i) + 1) * self.chunk, self.n)

    def chunk_key(self, name: str, i: int) -> str:
        """Key of chunk ``i`` of array ``name`` inside the store, e.g. ``x0/c/3/0/0/0``."""
        arr = self._arrays[name]
        coords = (i,) + (0,) * (arr.ndim - 1) if name in DATA_ARRAYS else (i,)
        return f"{name}/{arr.metadata.encode_chunk_key(coords)}"

    def chunk_exists(self, name: str, i: int) -> bool:
        return self._fs.exists(f"{self._root.rstrip('/')}/{self.chunk_key(name, i)}")

    # ---- markers ------------------------------------------------------------------------------
    def done_mask(self) -> np.ndarray:
        """(n_chunks,) bool: which chunks are fully written."""
        try:
            return np.asarray(self._arrays["done"][:], dtype=bool)
        except Exception:  # a corrupt marker object: find and name it
            return np.array([self.is_done(i) for i in range(self.n_chunks)], dtype=bool)

    def is_done(self, i: int) -> bool:
        """Chunk ``i``'s done marker; ChunkCorruptError if the marker object is unreadable."""
        self.chunk_bounds(i)
        try:
            return bool(self._arrays["done"][i])
        except Exception as e:
            raise ChunkCorruptError(self.uri, i, f"done marker unreadable ({e})") from e

    def missing_chunks(self) -> list[int]:
        """Indices of chunks whose done marker is unset."""
        return [int(i) for i in np.flatnonzero(~self.done_mask())]

    def nfe(self) -> np.ndarray:
        """(n_chunks,) int: model evaluations spent on each chunk (0 where not generated)."""
        try:
            return np.asarray(self._arrays["nfe"][:], dtype=np.int64)
        except Exception as first:  # a corrupt counter object: find and name it
            for i in range(self.n_chunks):
                try:
                    self._arrays["nfe"][i]
                except Exception as e:
                    raise ChunkCorruptError(self.uri, i, f"nfe counter unreadable ({e})") from e
            raise first

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
                place. Reusing buffers saves allocating (and page-faulting) fresh memory per read,
                which on some machines costs more than the read itself.

        Returns:
            x0 (m, *sample_shape) float32, x1 (m, *sample_shape) float32, y (m,) int64, m <= chunk
            (the ``out`` arrays when given).

        Raises:
            PairStoreError: chunk not generated yet (marker unset) when ``require_done``, or
                ``out`` of the wrong shape or dtype.
            ChunkCorruptError: checksum mismatch, undecodable bytes, or data missing.
        """
        if require_done and not self.is_done(i):
            raise PairStoreError(f"pair store {self.uri}: chunk {i} has not been generated yet")
        return read_arrays(self, i, out)

    def write_chunk(self, i: int, x0: np.ndarray, x1: np.ndarray, y: np.ndarray, nfe: int) -> None:
        """Write chunk ``i``'s data and NFE, then set its done marker (strictly after the data).

        Raises:
            PairStoreError: read-only handle or wrong shapes.
            ChunkCorruptError: NaN or Inf in x1 (nothing is marked).
        """
        if self.mode != "r+":
            raise PairStoreError(f"pair store {self.uri} is open read-only; open with mode='r+'")
        write_arrays(self, i, x0, x1, y, nfe)

    def clear_marker(self, i: int) -> None:
        """Unset chunk ``i``'s done marker so generation redoes it."""
        self.chunk_bounds(i)
        self._arrays["done"][i] = False

    # ---- completion (coordinator only) --------------------------------------------------------
    def chunk_digest(self, i: int) -> str:
        """sha256 of chunk ``i``'s decoded x0, x1, y bytes; raises on corrupt or non-finite data."""
        x0, x1, y = self.read_chunk(i)
        if not np.isfinite(x1).all():
            raise ChunkCorruptError(self.uri, i, "x1 has NaN or Inf")
        h = hashlib.sha256()
        for arr in (x0, x1, y):
            h.update(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
        return h.hexdigest()

    def compute_digest(self, chunk_digests: Sequence[str] | None = None) -> str:
        """Digest over the identity attrs and every chunk's sha256 (reads the store if not given).

        Args:
            chunk_digests: :meth:`chunk_digest` of every chunk, in order, when already computed.
        """
        chunks = list(chunk_digests) if chunk_digests is not None else None
        if chunks is None:
            chunks = [self.chunk_digest(i) for i in range(self.n_chunks)]
        return hashlib.sha256(
            canonical_json({"attrs": digest_attrs(self._attrs), "chunks": chunks})
        ).hexdigest()

    def finalize(self) -> str:
        """Check every chunk, then set ``complete=True`` and ``digest``. Coordinator only.

        Returns:
            The digest (sha256 hex).

        Raises:
            PairStoreError: chunks missing or a read-only handle; ChunkCorruptError: bad chunk.
        """
        if self.mode != "r+":
            raise PairStoreError(f"pair store {self.uri} is open read-only; open with mode='r+'")
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
        self._reattach_after_fork()
        self._group = self._group.update_attributes({"complete": complete, "digest": digest})
        self._attrs.update({"complete": complete, "digest": digest})

    def __repr__(self) -> str:
        return f"PairStore({self.uri!r}, n={self.n}, chunk={self.chunk}, mode={self.mode!r})"
