"""Helpers of the storage tests: store factories, byte snapshots, subprocess runner."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from rf_core.config import ModelConfig
from rf_core.models import build_model
from storage.pairstore import PairStore

REPO = Path(__file__).resolve().parents[2]
# The solver used by model-backed tests: rk4 with fixed steps, so each chunk is real work
# (a few hundred model evaluations) yet the whole suite stays small.
SOLVER = {"method": "rk4", "steps": 40}
TINY = ModelConfig(kind="mlp", data_shape=(2,), num_classes=3, hidden=32, depth=2)


def tiny_model(seed: int = 0) -> torch.nn.Module:
    """Untrained but deterministic 2-D conditional MLP."""
    torch.manual_seed(seed)
    return build_model(TINY)


def store_kwargs(**overrides) -> dict:
    """Arguments of PairStore.create for a tiny 2-D store (no model needed)."""
    kw = dict(
        n=30,
        chunk=8,
        sample_shape=(2,),
        seed=3,
        source={"checkpoint_sha256": "0" * 64},
        solver=dict(SOLVER),
        dataset="toy",
        num_classes=3,
    )
    kw.update(overrides)
    return kw


def source_for(path: Path) -> dict:
    from rf_core.training import checkpoint_sha256

    return {"model_uri": str(path), "checkpoint_sha256": checkpoint_sha256(path), "k": 1}


def fill_with_index(store: PairStore, chunk_ids=None) -> None:
    """Write synthetic pairs whose x0[:, 0] is the global sample index (no model needed)."""
    for i in range(store.n_chunks) if chunk_ids is None else chunk_ids:
        start, stop = store.chunk_bounds(i)
        idx = np.arange(start, stop, dtype=np.float32)
        x0 = np.stack([idx, -idx], 1).reshape(-1, *store.sample_shape)
        y = (np.arange(start, stop) % max(store.num_classes, 1)).astype(np.int64)
        store.write_chunk(i, x0, 2 * x0 + 1, y, nfe=i + 1)


def tree_hash(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` by relative path (a byte-level snapshot)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def read_all(uri) -> dict[str, np.ndarray]:
    """Every array of a store, read through zarr (for bit-level comparisons)."""
    import zarr

    g = zarr.open_group(str(uri), mode="r")
    return {name: g[name][:] for name in ("x0", "x1", "y", "done", "nfe")}


def assert_same_store(a, b) -> None:
    """Arrays bit-identical and digests equal."""
    ra, rb = read_all(a), read_all(b)
    for name in ra:
        assert ra[name].dtype == rb[name].dtype, name
        assert ra[name].tobytes() == rb[name].tobytes(), f"array {name} differs"
    da, db = PairStore.open(str(a)).attrs["digest"], PairStore.open(str(b)).attrs["digest"]
    assert da is not None and da == db


def run_py(*args, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run ``python *args`` from the repo root with one torch thread (the machine is shared)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def mappings_of(path: str | Path) -> int:
    """How many of this process's memory mappings are of ``path`` (a file, or any file under a
    folder such as a store's root)."""
    root = os.path.realpath(path)
    with open("/proc/self/maps") as f:
        files = [line.rstrip().split(maxsplit=5)[-1] for line in f]
    return sum(f == root or f.startswith(root + os.sep) for f in files)
