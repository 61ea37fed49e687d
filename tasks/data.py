"""Training and evaluation data by dataset name (plain functions, used inside tasks)."""

from __future__ import annotations

import torch
from torch import Tensor

from rf_core.data import TOYS


def load_data(
    dataset: str, split: str = "train", n_toy: int = 20_000, seed: int = 0, root: str | None = None
) -> tuple[Tensor, Tensor]:
    """Samples and labels of a dataset split.

    Args:
        dataset: a 2-D toy name, "mnist5k", or a torchvision name ("mnist", "fashion", "cifar10").
        split: "train" or "test" (toys: a different seed per split).
        n_toy: number of toy samples to draw.
        seed: toy draw seed.
        root: torchvision root holding the downloaded files.

    Returns:
        x (N, *shape) float32 (images in [-1, 1]) and y (N,) int64 (-1 for toys).
    """
    from rf_core import data

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if dataset in TOYS:
        # Separate streams: test samples must not repeat the training draw.
        g = torch.Generator().manual_seed(seed if split == "train" else seed + 1_000_003)
        x = data.sample_toy(dataset, n_toy, g)
        return x, torch.full((len(x),), -1, dtype=torch.int64)
    if dataset == "mnist5k":
        return data.load_mnist5k(split)
    return data.load_torchvision(dataset, root, split)
