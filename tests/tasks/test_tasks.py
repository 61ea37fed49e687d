"""Task verbs called directly (``.fn``): sharding, fault injection + resume, progress, data."""

from __future__ import annotations

import pytest
import torch

from rf_core.config import ModelConfig
from rf_core.models import build_model
from rf_core.training import save_checkpoint
from storage.pairstore import PairStore
from tasks import progress
from tasks.data import load_data
from tasks.generate import InjectedFailure, finalize_store, generate_shard, split_shards


@pytest.mark.parametrize(("n_chunks", "n_shards"), [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_split_shards_partitions_every_chunk_once(n_chunks, n_shards):
    shards = split_shards(list(range(n_chunks)), n_shards)
    assert sorted(c for s in shards for c in s) == list(range(n_chunks))
    assert len(shards) == min(n_chunks, n_shards) and all(shards)


@pytest.fixture
def store_and_ckpt(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="mlp", data_shape=(2,), hidden=16, depth=1))
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    from rf_core.training import checkpoint_sha256

    store = PairStore.create(
        str(tmp_path / "p.zarr"), n=96, chunk=16, sample_shape=(2,), seed=3,
        source={"checkpoint_sha256": checkpoint_sha256(ckpt), "model_id": None,
                "model_uri": str(ckpt), "run_id": None, "k": 1},
        solver={"method": "euler", "steps": 4}, dataset="8gaussians", num_classes=0,
    )  # fmt: skip
    return store, str(ckpt)


def test_injected_failure_keeps_written_chunks_and_retry_resumes(store_and_ckpt):
    store, ckpt = store_and_ckpt
    chunks = [0, 2, 4, 5]
    with pytest.raises(InjectedFailure, match="shard 3: injected failure"):
        generate_shard.fn(store.uri, ckpt, chunks, "cpu", 3, group=2, fail_attempts=1)
    assert store.missing_chunks() == [1, 3, 4, 5]  # the first group (0, 2) was written
    stats = generate_shard.fn(store.uri, ckpt, chunks, "cpu", 3, group=2)
    assert (stats.generated, stats.skipped) == (2, 2)
    stats = generate_shard.fn(store.uri, ckpt, [1, 3], "cpu", 4)
    assert stats.generated == 2 and stats.nfe == 2 * 4
    digest = finalize_store.fn(store.uri)
    assert PairStore.open(store.uri).attrs["digest"] == digest
    assert finalize_store.fn(store.uri) == digest  # idempotent


def test_finalize_refuses_incomplete_store(store_and_ckpt):
    store, _ = store_and_ckpt
    with pytest.raises(ValueError, match="not generated yet"):
        finalize_store.fn(store.uri)


def test_progress_reports_to_listeners_outside_runs():
    seen = []

    def listener(key, done, total, desc):
        seen.append((key, done, total, desc))

    progress.add_listener(listener)
    try:
        p = progress.Progress(progress.artifact_key("Train", "MNIST 5k"), 10, "steps")
        p.update(4, "step 4")
        p.update(25)  # clamps at total for the artifact, tells listeners the raw count
    finally:
        progress.remove_listener(listener)
    assert seen[0] == ("train-mnist-5k", 0.0, 10, "steps")
    assert seen[1] == ("train-mnist-5k", 4, 10, "step 4")
    assert len(seen) == 3


def test_load_data_toy_splits_differ_and_are_seeded():
    a, ya = load_data("moons", "train", n_toy=64, seed=1)
    b, _ = load_data("moons", "train", n_toy=64, seed=1)
    c, _ = load_data("moons", "test", n_toy=64, seed=1)
    assert a.shape == (64, 2) and torch.equal(a, b) and not torch.equal(a, c)
    assert (ya == -1).all()
    with pytest.raises(ValueError, match="split must be"):
        load_data("moons", "valid")
