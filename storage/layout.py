"""The ``rf-pairs/1`` format: constants, group attributes, codecs and array layout.

Layout (docs/pair-store.md)::

    <name>.zarr/   group attrs (coordinator only): schema, n, chunk, sample_shape, dtype, seed,
                   num_classes, source, solver, dataset, code_version, created_at, complete, digest,
                   and solver_choice when ``solver`` was chosen by a screen (method auto)
      x0   float32 (n, *sample_shape)  chunks (chunk, *sample_shape)
      x1   float32 (n, *sample_shape)  same chunks
      y    int64   (n,)                chunks (chunk,)
      done bool    (n_chunks,)         chunks (1,)   one object per marker, set after the data
      nfe  int32   (n_chunks,)         chunks (1,)   model evaluations spent on each chunk
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from rf_core.solver_spec import SolverSpec

SCHEMA = "rf-pairs/1"
DATA_ARRAYS = ("x0", "x1", "y")
MARKER_ARRAYS = ("done", "nfe")  # one object per chunk each: its done marker and NFE counter
SOURCE_KEYS = ("model_id", "model_uri", "run_id", "checkpoint_sha256", "k")
# The attr recording how a screen chose the store's solver (outside the digest and the identity).
SOLVER_CHOICE = "solver_choice"
# Compressors per data array; a crc32c checksum is always appended. Gaussian noise (x0) does not
# compress (1.07-1.15x measured), so compressing it only costs time.
DEFAULT_COMPRESSORS: dict[str, tuple] = {"x0": (), "x1": (), "y": (ZstdCodec(level=3),)}


class PairStoreError(ValueError):
    """A pair store is missing, malformed, incompatible or used the wrong way."""


class StoreExistsError(PairStoreError):
    """Something already exists where a new store was to be created."""


class ChunkCorruptError(PairStoreError):
    """A chunk failed its checksum, holds NaN/Inf, or is marked done without data."""

    def __init__(self, uri: str, index: int, detail: str):
        super().__init__(
            f"pair store {uri}: chunk {index} is corrupt: {detail}. "
            f"Run `rectiflow pairs verify --repair {uri}` to regenerate it."
        )
        self.index = index


def format_ranges(ids: Sequence[int]) -> str:
    """Compress sorted chunk ids into ranges: [0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"."""
    ids, parts, i = sorted(ids), [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ", ".join(parts)


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces) for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise PairStoreError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def solver_spec(solver: SolverSpec | Mapping[str, Any]) -> SolverSpec:
    """``solver`` as a spec; a dict is read as a store carries it (missing or None = default).

    Raises:
        PairStoreError: the dict is not a solver recipe, naming the key and what is wrong.
    """
    if isinstance(solver, SolverSpec):
        return solver
    try:
        return SolverSpec.from_dict(solver)
    except ValueError as e:
        raise PairStoreError(str(e)) from None


def normalize_source(source: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(source) - set(SOURCE_KEYS)
    if unknown or not isinstance(source.get("checkpoint_sha256"), str):
        raise PairStoreError(
            f"source must be a dict with a str 'checkpoint_sha256' and keys among {SOURCE_KEYS}, "
            f"got {source}"
        )
    return {k: source.get(k) for k in SOURCE_KEYS}


def code_version() -> str:
    try:
        return metadata.version("rectiflow")
    except metadata.PackageNotFoundError:
        return "unknown"


def make_attrs(
    n: int,
    chunk: int,
    sample_shape: Sequence[int],
    seed: int,
    source: Mapping[str, Any],
    solver: SolverSpec | Mapping[str, Any],
    dataset: str,
    num_classes: int,
    solver_choice: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validated group attrs for a new store (:meth:`storage.pairstore.PairStore.create`).

    Args:
        n: number of pairs (> 0).
        chunk: pairs per chunk, the unit of work and resume (> 0).
        sample_shape: shape of one sample, e.g. (1, 28, 28).
        seed: base seed; chunk i's noise and labels depend on (seed, i) only.
        source: {model_id, model_uri, run_id, checkpoint_sha256, k} of the generating model.
        solver: a SolverSpec, or its dict (as :func:`solver_spec` reads it); an unset
            batch_size means one solve per chunk. It must be a recipe: an auto request is
            screened first (see :mod:`storage.solver_choice`).
        dataset: name of the data the source model was trained on.
        num_classes: labels are drawn uniformly from [0, num_classes); 0 = unconditional (-1).
        solver_choice: a screen's record of how ``solver`` was chosen (outside the digest).
    """
    n, chunk = check_positive_int("n", n), check_positive_int("chunk", chunk)
    spec = solver_spec(solver)
    if spec.is_auto:
        raise PairStoreError(
            "solver: method 'auto' is screened on the model before a store is made "
            "(storage.solver_choice.open_or_create_pairs); a store records the chosen recipe"
        )
    shape = [check_positive_int("sample_shape[i]", d) for d in sample_shape] if sample_shape else []
    if not shape:
        raise PairStoreError(
            f"sample_shape must be a non-empty tuple of positive ints, got {sample_shape!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise PairStoreError(f"seed must be an int >= 0, got {seed!r}")
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int | np.integer)
        or num_classes < 0
    ):
        raise PairStoreError(
            f"num_classes must be an int >= 0 (0 = unconditional), got {num_classes!r}"
        )
    if not isinstance(dataset, str) or not dataset:
        raise PairStoreError(f"dataset must be a non-empty str, got {dataset!r}")
    choice = {SOLVER_CHOICE: json.loads(json.dumps(solver_choice))} if solver_choice else {}
    return {
        "schema": SCHEMA,
        "n": n,
        "chunk": chunk,
        "sample_shape": shape,
        "dtype": "float32",
        "seed": int(seed),
        "num_classes": int(num_classes),
        "source": normalize_source(source),
        "solver": spec.store_dict(chunk),
        "dataset": dataset,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(),
        "complete": False,
        "digest": None,
    } | choice


def identity(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """What must match for a resume: everything that changes the bytes of a chunk.

    The solver is compared by :meth:`rf_core.solver_spec.SolverSpec.resume_identity`, with
    defaults filled in: a store from before ``grid`` existed equals a request for the uniform grid.
    """
    keys = ("n", "chunk", "sample_shape", "dtype", "seed", "num_classes")
    out = {k: json.loads(json.dumps(attrs[k])) for k in keys}
    out["solver"] = solver_spec(attrs["solver"]).resume_identity(attrs["chunk"])
    out["source.checkpoint_sha256"] = attrs["source"]["checkpoint_sha256"]
    return out


def digest_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attrs covered by the digest: identity + provenance, not timestamps or code version.

    The solver is taken as stored (no defaults filled in), so a store's digest never changes
    when keys are added to the solver dict later.
    """
    keys = (
        "schema",
        "n",
        "chunk",
        "sample_shape",
        "dtype",
        "seed",
        "num_classes",
        "source",
        "solver",
        "dataset",
    )
    return {k: attrs[k] for k in keys}


def resolve_codecs(codecs: Mapping[str, Sequence[Any]] | None) -> dict[str, list]:
    """Compressor lists per data array with crc32c appended (it must be the last codec)."""
    chosen = dict(DEFAULT_COMPRESSORS)
    for name, value in (codecs or {}).items():
        if name not in DATA_ARRAYS:
            raise PairStoreError(f"codecs keys must be among {DATA_ARRAYS}, got {name!r}")
        chosen[name] = tuple(value)
    return {
        k: [c for c in v if not isinstance(c, Crc32cCodec)] + [Crc32cCodec()]
        for k, v in chosen.items()
    }


def create_arrays(
    group: zarr.Group, attrs: Mapping[str, Any], compressors: Mapping[str, list]
) -> None:
    """Create the five arrays of an empty store (fill values only, no chunk objects)."""
    n, chunk, shape = attrs["n"], attrs["chunk"], tuple(attrs["sample_shape"])
    n_chunks = math.ceil(n / chunk)
    for name in ("x0", "x1"):
        group.create_array(
            name,
            shape=(n, *shape),
            chunks=(chunk, *shape),
            dtype="float32",
            compressors=compressors[name],
        )
    group.create_array(
        "y", shape=(n,), chunks=(chunk,), dtype="int64", compressors=compressors["y"]
    )
    # One object per marker / counter, so concurrent writers never share a chunk.
    for name, dtype, fill in (("done", "bool", False), ("nfe", "int32", 0)):
        group.create_array(
            name,
            shape=(n_chunks,),
            chunks=(1,),
            dtype=dtype,
            fill_value=fill,
            compressors=[Crc32cCodec()],
        )
