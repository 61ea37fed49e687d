"""Datasets read from disk: a folder of class subfolders of images, or arrays in an npz file
(:mod:`rf_core.npz_arrays`).

Both are map-style torch datasets of ``(x, y)``: x float32 ``(C, H, W)`` as the model sees it
(images in [-1, 1]; latents as stored, times ``scale`` after ``shift``), y int64 (-1 when the set
has no labels). Neither is loaded whole: a folder decodes one file per item, and an npz stored
uncompressed (``np.savez``) is memory-mapped, so DataLoader workers read a set larger than memory
in batches. Each has an :meth:`identity` (a sha256 digest, the class names and the size) for
lineage, and a :meth:`check` that reads everything once and fails naming the bad file or array.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

DISK_KINDS = ("folder", "npz")
VALUES = ("images", "latents")
_MODES = {1: "L", 3: "RGB"}


class DatasetError(ValueError):
    """A dataset on disk that cannot be used as configured; the message names the file."""


@dataclass(frozen=True)
class DatasetIdentity:
    """What lineage records of a dataset on disk.

    Attributes:
        kind: ``folder`` or ``npz``.
        path: absolute path of the folder or file.
        digest: sha256 hex: of the sorted file list with sizes and mtimes (folder), or of the
            arrays' shapes, dtypes and bytes (npz).
        n: number of samples.
        classes: class names (folder: the subfolders, sorted; npz: its ``classes`` array, else
            "0".."K-1" from ``y``; () without labels).
    """

    kind: str
    path: str
    digest: str
    n: int
    classes: tuple[str, ...]


def to_unit_range(pixels: np.ndarray) -> Tensor:
    """uint8 pixels 0..255 (any shape) -> float32 in [-1, 1], the one image scaling."""
    return torch.tensor(np.asarray(pixels), dtype=torch.float32) / 127.5 - 1.0  # a copy


def _fit(img, height: int, width: int):
    """Resize (bicubic) so the image covers height x width, then crop its centre to that size."""
    from PIL import Image

    w, h = img.size
    if (w, h) != (width, height):
        s = max(height / h, width / w)
        nw, nh = max(width, round(w * s)), max(height, round(h * s))
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - width) // 2, (nh - height) // 2
        img = img.crop((left, top, left + width, top + height))
    return img


class FolderImages(Dataset):
    """Images in class subfolders, found as torchvision's ``ImageFolder`` finds them.

    Args:
        root: folder with one subfolder per class (sorted names give labels 0..K-1).
        shape: ``(C, H, W)`` with C = 1 (grey) or 3 (RGB); images are resized to cover H x W
            and centre-cropped.

    Raises:
        DatasetError: no such folder, no class subfolders, or a class without images.
    """

    def __init__(self, root: str | Path, shape: tuple[int, ...]):
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        self.root = Path(root).expanduser().resolve()
        if len(shape) != 3 or shape[0] not in _MODES:
            raise DatasetError(
                f"image folder {self.root}: shape must be (1 or 3, H, W), got {shape}"
            )
        self.shape = tuple(shape)
        if not self.root.is_dir():
            raise DatasetError(f"image folder {self.root} does not exist")
        try:
            self.classes, to_idx = find_classes(str(self.root))
            self.samples = make_dataset(str(self.root), to_idx, extensions=IMG_EXTENSIONS)
        except (FileNotFoundError, ValueError) as e:
            raise DatasetError(f"image folder {self.root}: {e}") from None

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> Tensor:
        """Image ``i`` as uint8 (C, H, W); raises DatasetError naming the file if unreadable."""
        from PIL import Image, UnidentifiedImageError

        path = self.samples[i][0]
        c, h, w = self.shape
        try:
            with Image.open(path) as img:
                pixels = np.asarray(_fit(img.convert(_MODES[c]), h, w))
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            msg = f"image file {path} is unreadable (corrupt or no image?): {e}"
            raise DatasetError(msg) from None
        return torch.from_numpy(pixels.reshape(h, w, c).transpose(2, 0, 1).copy())

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return to_unit_range(self.load(i).numpy()), torch.tensor(self.samples[i][1])

    def identity(self) -> DatasetIdentity:
        """Digest of the sorted relative paths, sizes and mtimes: a changed file changes it."""
        h = hashlib.sha256()
        for path, label in self.samples:
            st = os.stat(path)
            rel = os.path.relpath(path, self.root)
            h.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return DatasetIdentity(
            "folder", str(self.root), h.hexdigest(), len(self), tuple(self.classes)
        )

    def check(self, workers: int = 0) -> None:
        """Decode every image once (before training starts), in ``workers`` DataLoader worker
        processes; DatasetError names the bad file."""
        from torch.utils.data import DataLoader

        for _ in DataLoader(_Decoded(self), batch_size=64, num_workers=workers, collate_fn=len):
            pass


class _Decoded(Dataset):
    """Item i: image i decoded (then dropped): what :meth:`FolderImages.check` iterates."""

    def __init__(self, images: FolderImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> int:
        self.images.load(i)
        return i
