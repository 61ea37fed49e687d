"""Training and evaluation data by dataset name (plain functions, used inside tasks)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from rf_core.data import TOYS


@dataclass(frozen=True)
class DataInput:
    """1-RF training data: the dataset's train split (toys: ``n_train`` points drawn with
    ``seed``; torchvision sets: the files under ``root``; ``folder`` / ``npz``: the set at
    ``path``). The flows build it from the ``data:`` section and the pipeline seed.

    Attributes:
        dataset: a toy, ``mnist5k``, a torchvision name, or ``folder`` / ``npz`` (on disk).
        n_train: toy samples drawn with ``seed``.
        root: torchvision root.
        seed: toy draw, and the order, flips and noise of training batches.
        path: the folder or npz file of an on-disk set.
        values: npz: ``images`` or ``latents``.
        scale: latents: ``(x - shift) * scale``.
        shift: latents, see ``scale``.
        flip: random left-right mirroring of training images.
        workers: DataLoader worker processes (on-disk sets).
    """

    dataset: str
    n_train: int = 20_000
    root: str | None = None
    seed: int = 0
    path: str | None = None
    values: str = "images"
    scale: float = 1.0
    shift: float = 0.0
    flip: bool = False
    workers: int = 0

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def open(self, shape: tuple[int, ...]):
        """The on-disk set as a dataset of ``(x, y)`` (rf_core.datasets); DatasetError if bad."""
        from rf_core.data import open_disk_dataset

        return open_disk_dataset(
            self.dataset, self.path, shape, self.values, self.scale, self.shift
        )


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


def train_batches(
    data: DataInput,
    shape: tuple[int, ...],
    batch_size: int,
    labels: bool = True,
    rank: int = 0,
    world: int = 1,
) -> Iterable[tuple[Tensor, ...]]:
    """Endless, resumable 1-RF batches (x0, x1, y): shuffled data, each paired with fresh noise;
    process ``rank`` of ``world`` data-parallel ones gets its rows of each global batch of
    ``batch_size``.

    Sets held in memory (toys, MNIST-5k, torchvision) without ``flip`` take the in-memory
    minibatch path; on-disk sets are checked whole first (a bad file fails here, naming it,
    before training starts) and then streamed by DataLoader workers, as are flipped sets.
    ``labels=False`` trains unconditionally (every y is -1).
    """
    from rf_core.batches import independent_batches
    from rf_core.datasets import DatasetError
    from rf_core.loader_batches import LoaderBatches

    if data.on_disk:
        try:
            ds = data.open(shape)
            ds.check(data.workers)
        except DatasetError as e:
            raise ValueError(f"data.path: {e}") from None
    else:
        x1, y = load_data(data.dataset, "train", n_toy=data.n_train, seed=data.seed, root=data.root)
        y = y if labels else torch.full_like(y, -1)
        if not data.flip:  # the in-memory path, batch for batch
            g = torch.Generator().manual_seed(data.seed)
            size = min(batch_size // world, len(x1) // world)
            return independent_batches(x1, y, size, g, rank, world)
        ds = torch.utils.data.TensorDataset(x1, y)
    per_process = batch_size // world
    return LoaderBatches(ds, per_process, data.seed, data.workers, data.flip, labels, rank, world)


def reference_images(data: DataInput, shape: tuple[int, ...], n: int, seed: int) -> Tensor:
    """Up to ``n`` training images (a subset drawn with ``seed``): the real side of an FID.

    Papers compare against the training set's statistics (50k images for CIFAR-10).
    """
    if data.on_disk:
        ds = data.open(shape)
    else:
        ds = torch.utils.data.TensorDataset(*load_data(data.dataset, "train", root=data.root))
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]
    return torch.stack([ds[int(i)][0] for i in idx])
