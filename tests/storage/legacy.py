"""Pair stores in the attribute format earlier releases wrote, byte for byte.

Only APIs every release had are used here (``PairStore.create`` with a solver dict, zarr attrs,
``write_chunk``), so the same helper builds the same store under old and new code: the digests
hard-coded in ``test_legacy_stores.py`` were computed with it on the code before the solver spec.

    python -m tests.storage.legacy    # prints the digest of every legacy store
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import zarr

from storage.pairstore import PairStore
from tests.storage.storekit import fill_with_index

# Solver dicts as stores carry them. Before "grid", "rho" and "compile" existed, the solver had
# five keys; a config (pydantic SolverParams) wrote rtol/atol even for fixed-step methods, the
# worker CLI and the benchmarks wrote None where they were not given.
LEGACY_SOLVERS: dict[str, dict[str, Any]] = {
    "rk4-before-grids": {"method": "rk4", "rtol": None, "atol": None, "steps": 40, "batch_size": 8},
    "dopri5-before-grids": {
        "method": "dopri5",
        "rtol": None,
        "atol": None,
        "steps": None,
        "batch_size": 8,
    },
    "rk4-from-config": {
        "method": "rk4",
        "rtol": 1e-5,
        "atol": 1e-5,
        "steps": 14,
        "batch_size": 8,
        "grid": "uniform",
        "rho": 2.0,
        "compile": False,
    },
    "dopri5-from-config": {
        "method": "dopri5",
        "rtol": 1e-4,
        "atol": 1e-4,
        "steps": None,
        "batch_size": 4,
        "grid": "uniform",
        "rho": 2.0,
        "compile": False,
    },
    "rk4-ends-compiled": {
        "method": "rk4",
        "rtol": None,
        "atol": None,
        "steps": 6,
        "batch_size": 8,
        "grid": "ends",
        "rho": 1.5,
        "compile": True,
    },
}


def legacy_attrs(solver: dict[str, Any]) -> dict[str, Any]:
    """The complete group attrs of a tiny unfinished 2-D store with ``solver``."""
    return {
        "schema": "rf-pairs/1",
        "n": 30,
        "chunk": 8,
        "sample_shape": [2],
        "dtype": "float32",
        "seed": 3,
        "num_classes": 3,
        "source": {
            "model_id": "m-0123456789abcdef",
            "model_uri": "models:/m-0123456789abcdef",
            "run_id": "0123456789abcdef0123456789abcdef",
            "checkpoint_sha256": "0" * 64,
            "k": 1,
        },
        "solver": solver,
        "dataset": "toy",
        "code_version": "0.1.0",
        "created_at": "2025-01-01T00:00:00+00:00",
        "complete": False,
        "digest": None,
    }


def write_legacy_store(uri: str, solver: dict[str, Any], chunks: list[int] | None = None) -> str:
    """A store at ``uri`` whose attrs are exactly :func:`legacy_attrs` (``solver``), with
    synthetic pairs (storekit.fill_with_index) in ``chunks`` (all when None). Returns ``uri``."""
    PairStore.create(
        uri,
        n=30,
        chunk=8,
        sample_shape=(2,),
        seed=3,
        source={"checkpoint_sha256": "0" * 64},
        solver={"method": "euler", "steps": 1},
        dataset="toy",
        num_classes=3,
    )
    group = zarr.open_group(uri, mode="r+")
    group.attrs.clear()
    group.update_attributes(legacy_attrs(solver))
    fill_with_index(PairStore.open(uri, mode="r+"), chunks)
    return uri


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, solver in LEGACY_SOLVERS.items():
            uri = write_legacy_store(str(Path(tmp) / f"{name}.zarr"), solver)
            print(f'    "{name}": "{PairStore.open(uri, mode="r+").finalize()}",')


if __name__ == "__main__":
    main()
