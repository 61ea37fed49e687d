"""Where ``rectiflow sample`` writes: a grid PNG, an npz, or a folder of PNGs, chosen by ``--out``.

- ``*.png``: one picture (a grid of images; for 2-D points, a scatter plot);
- ``*.npz``: ``x`` (N, *data_shape) float32, images in [-1, 1] (N×C×H×W), and ``y`` (N,) int64
  labels (-1 = unconditional): what external FID tools and notebooks read;
- an existing folder: one PNG per image, ``000000_class3.png`` (``000000.png`` unlabelled).

Every file is written in full under a temporary name and renamed into place, with fixed
metadata (the npz's zip timestamps), so a seed gives the same bytes twice. Nothing that exists is
replaced without ``overwrite``.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest zip timestamp: the same on every run


@dataclass(frozen=True)
class Output:
    """What ``--out`` names: its kind ("grid", "npz", "folder") and the files it writes."""

    kind: str
    path: Path

    def files(self, y: Tensor) -> list[Path]:
        """The files written for labels ``y``."""
        if self.kind != "folder":
            return [self.path]
        return [self.path / image_name(i, int(label)) for i, label in enumerate(y)]


def image_name(i: int, label: int) -> str:
    return f"{i:06d}" + (f"_class{label}" if label >= 0 else "") + ".png"


def output_of(out: Path, images: bool) -> Output:
    """The output ``out`` names, checked before any sampling.

    Raises:
        ValueError: ``out`` is neither .png, .npz nor an existing folder, its folder does not
            exist, or it asks a folder of PNGs of a model that makes no images.
    """
    if out.suffix.lower() in (".png", ".npz"):
        if not out.parent.is_dir():
            raise ValueError(f"folder {out.parent} does not exist: create it first")
        return Output("grid" if out.suffix.lower() == ".png" else "npz", out)
    if not out.is_dir():
        raise ValueError(
            f"{out} is not a .png or .npz file, nor an existing folder (for one PNG per image): "
            "create the folder first"
        )
    if not images:
        raise ValueError("a folder of PNGs needs an image model; this one makes 2-D points")
    return Output("folder", out)


def check_free(output: Output, y: Tensor, overwrite: bool) -> None:
    """Raise ValueError naming the first file ``output`` would replace, unless ``overwrite``."""
    if overwrite:
        return
    taken = [p for p in output.files(y) if p.exists()]
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        raise ValueError(f"{taken[0]} exists{more}; pass --overwrite to replace it")


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` with fixed zip timestamps (numpy stamps the current time)."""

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for name, a in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_TIME)
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.ascontiguousarray(a), allow_pickle=False)

    _atomic(path, write)


def write_samples(output: Output, x: Tensor, y: Tensor, nrow: int) -> list[Path]:
    """Write samples ``x`` (N, *data_shape) with labels ``y``; returns the files written."""
    from rf_core.plots import image_grid, plot_points, save_image

    if output.kind == "npz":
        save_npz(output.path, x=x.numpy().astype(np.float32), y=y.numpy().astype(np.int64))
    elif output.kind == "grid" and x.dim() == 2:
        _atomic(output.path, lambda tmp: plot_points(x, tmp))
    elif output.kind == "grid":
        _atomic(output.path, lambda tmp: save_image(image_grid(x, nrow=nrow), tmp))
    else:
        for image, path in zip(x, output.files(y), strict=True):
            _atomic(path, lambda tmp, im=image: save_image(image_grid(im[None], 1, pad=0), tmp))
    return output.files(y)
