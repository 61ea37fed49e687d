"""Data loaders: seeded toys, the MNIST-5k split, and torchvision's offline error."""

from __future__ import annotations

import pytest
import torch

from rf_core.data import TOYS, load_dataset, load_mnist5k, load_torchvision, sample_toy


@pytest.mark.parametrize("name", TOYS)
def test_toys_have_shape_and_are_deterministic_per_seed(name):
    a = sample_toy(name, 500, torch.Generator().manual_seed(0))
    b = sample_toy(name, 500, torch.Generator().manual_seed(0))
    c = sample_toy(name, 500, torch.Generator().manual_seed(1))
    assert a.shape == (500, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sample_toy(name, 0, torch.Generator()).shape == (0, 2)


def test_toy_geometry():
    g = torch.Generator().manual_seed(0)
    radii = sample_toy("8gaussians", 4000, g).norm(dim=1)
    assert abs(radii.mean().item() - 4.0) < 0.1
    points = sample_toy("two_points", 1000, g)
    assert sorted({tuple(p.tolist()) for p in points}) == [(3.0, -3.0), (3.0, 3.0)]
    board = sample_toy("checkerboard", 4000, g)
    cells = (torch.floor(board[:, 0] / 2) + torch.floor(board[:, 1] / 2)) % 2
    assert board.abs().max() <= 4 and cells.unique().numel() == 1  # one colour only


def test_unknown_toy_and_negative_n():
    with pytest.raises(ValueError, match="allowed: 8gaussians, moons, two_points, checkerboard"):
        sample_toy("spirals", 10, torch.Generator())
    with pytest.raises(ValueError, match="n must be >= 0"):
        sample_toy("moons", -1, torch.Generator())


def test_mnist5k_split_sizes_range_balance_and_disjointness():
    xtr, ytr = load_mnist5k("train")
    xte, yte = load_mnist5k("test")
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert xtr.min() == -1.0 and xtr.max() == 1.0 and xte.min() >= -1 and xte.max() <= 1
    assert torch.bincount(ytr).tolist() == [400] * 10
    assert torch.bincount(yte).tolist() == [100] * 10
    assert ytr[:50].unique().numel() > 5  # shuffled, not sorted by class
    train_rows = {row.numpy().tobytes() for row in xtr.flatten(1)}
    assert not any(row.numpy().tobytes() in train_rows for row in xte.flatten(1))
    again, _ = load_mnist5k("train")
    assert torch.equal(again, xtr)  # fixed seed: same split every time


def test_split_and_name_are_checked():
    with pytest.raises(ValueError, match="allowed: train, test"):
        load_mnist5k("val")
    with pytest.raises(ValueError, match="allowed: mnist, fashion, cifar10"):
        load_torchvision("svhn", "/nowhere", "train")
    with pytest.raises(ValueError, match="needs root"):
        load_dataset("mnist", "train")
    with pytest.raises(ValueError, match="allowed: mnist5k"):
        load_dataset("imagenet", "train", root="/x")


@pytest.mark.parametrize("name", ["mnist", "fashion", "cifar10"])
def test_torchvision_without_files_names_root_and_the_fix(tmp_path, name):
    with pytest.raises(FileNotFoundError) as err:
        load_torchvision(name, tmp_path, "train")
    message = str(err.value)
    assert str(tmp_path) in message and "download=True" in message
    assert list(tmp_path.iterdir()) == []  # nothing fetched or created
