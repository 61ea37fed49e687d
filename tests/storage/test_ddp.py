"""Data-parallel training in real processes (gloo on the CPU): the replicas stay identical, the
pair stream is split by rank, and the gradients are averaged like one big batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from storage.pairstore import PairStore
from tests.procs import free_port
from tests.storage.ddp_worker import spawned, train
from tests.storage.storekit import store_kwargs

MODEL = {"kind": "mlp", "data_shape": [2], "num_classes": 3, "hidden": 32, "depth": 2}


def run_ranks(world: int, spec: dict, out: Path) -> list[dict]:
    """Train ``spec`` in ``world`` spawned processes; each one's record."""
    out.mkdir()
    address = f"tcp://127.0.0.1:{free_port()}"
    mp.start_processes(
        spawned, args=(world, address, spec, str(out)), nprocs=world, start_method="spawn"
    )
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def random_pairs(tmp_path_factory) -> PairStore:
    """8 chunks of 128 pairs: x0 Gaussian (every row distinct), x1 = x0 / 2 + 1."""
    path = tmp_path_factory.mktemp("ddp") / "p.zarr"
    store = PairStore.create(str(path), **store_kwargs(n=1024, chunk=128))
    rng = np.random.default_rng(0)
    for i in range(store.n_chunks):
        x0 = rng.standard_normal((128, 2)).astype(np.float32)
        store.write_chunk(i, x0, x0 / 2 + 1, rng.integers(0, 3, 128), nfe=1)
    store.finalize()
    return store


@pytest.mark.slow
def test_two_ranks_stay_identical_and_read_each_pair_once_per_epoch(tmp_path, random_pairs):
    # 128 pairs per step, 64 per rank; each rank streams 4 of the 8 chunks: 8 steps an epoch.
    train_cfg = {"steps": 16, "batch_size": 128, "log_every": 2, "lr": 1e-2}
    spec = {"model": MODEL, "train": train_cfg, "store": random_pairs.uri}
    a, b = run_ranks(2, spec, tmp_path / "ddp")
    assert len(a["digests"]) == 8 and a["digests"] == b["digests"]  # after every logged step
    assert a["losses"] == b["losses"]  # the logged losses are averaged over the ranks
    every = {r.tobytes() for i in range(8) for r in random_pairs.read_chunk(i)[0]}
    for epoch in (0, 1):
        mine, theirs = a["rows"][epoch], b["rows"][epoch]
        assert len(mine) == len(set(mine)) == 512 == len(theirs) == len(set(theirs))
        assert not set(mine) & set(theirs) and set(mine) | set(theirs) == every


@pytest.mark.slow
def test_two_ranks_average_gradients_like_one_process_on_the_whole_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (512,), generator=g)
    x1 = torch.randn(512, 2, generator=g) * 0.1 + torch.stack([y.float(), -y.float()], 1)
    train_cfg = {"steps": 30, "batch_size": 64, "log_every": 10, "accumulation": 2}
    spec = {"model": MODEL, "train": train_cfg, "data": (x1, y)}
    ranks = run_ranks(2, spec, tmp_path / "ddp")
    one = train(0, 1, None, spec, str(tmp_path))
    assert ranks[0]["digests"] == ranks[1]["digests"]
    # Same samples, noise and times per step (rf_core.batches): only the sums' order differs.
    for k, v in one["weights"].items():
        torch.testing.assert_close(ranks[0]["weights"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    np.testing.assert_allclose(ranks[0]["losses"], one["losses"], rtol=1e-4)
