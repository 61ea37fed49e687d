"""LoaderBatches: resumable at any batch, and the same samples for any number of processes."""

import pytest
import torch
from torch.utils.data import TensorDataset

from rf_core.loader_batches import LoaderBatches


def _set(n: int = 23) -> TensorDataset:
    x = torch.arange(n * 4, dtype=torch.float32).reshape(n, 1, 2, 2)
    return TensorDataset(x, torch.arange(n) % 3)


def _take(batches, k: int) -> list[tuple[torch.Tensor, ...]]:
    return [next(batches) for _ in range(k)]


def test_a_restored_state_continues_the_exact_sequence_across_epochs():
    ds = _set()
    whole = _take(LoaderBatches(ds, 4, seed=7, flip=True), 12)  # 5 batches an epoch
    first = LoaderBatches(ds, 4, seed=7, flip=True)
    _take(first, 7)
    state = first.state_dict()
    resumed = LoaderBatches(ds, 4, seed=7, flip=True)
    resumed.load_state_dict(state)
    for got, want in zip(_take(resumed, 5), whole[7:], strict=True):
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)


def test_two_processes_split_the_global_batch_of_one():
    ds = _set()
    one = _take(LoaderBatches(ds, 6, seed=1, flip=True), 6)
    ranks = [_take(LoaderBatches(ds, 3, seed=1, flip=True, rank=r, world=2), 6) for r in (0, 1)]
    for step, want in enumerate(one):
        for i, part in enumerate(want):
            got = torch.cat([ranks[0][step][i], ranks[1][step][i]])
            assert torch.equal(got, part), f"step {step}, tensor {i}"


def test_each_epoch_visits_every_full_batch_once_and_unconditional_means_minus_one():
    ds = _set(20)
    seen = torch.cat([b[1] for b in _take(LoaderBatches(ds, 5, seed=0, labels=False), 4)])
    assert sorted(seen[:, 0, 0, 0].tolist()) == [4.0 * i for i in range(20)]
    assert (next(LoaderBatches(ds, 5, seed=0, labels=False))[2] == -1).all()


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="empty"):
        LoaderBatches(TensorDataset(torch.zeros(0, 1), torch.zeros(0)), 2, seed=0)
    with pytest.raises(ValueError, match="rank"):
        LoaderBatches(_set(), 2, seed=0, rank=2, world=2)
