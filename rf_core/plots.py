"""Pictures: 2-D trajectory panels (matplotlib, Agg backend) and image grids (torchvision tiles
and encodes them). Both are imported lazily: each costs seconds at import."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def plot_trajectories(
    panels: dict[str, Tensor], path: str | Path, target: Tensor | None = None, max_lines: int = 300
) -> Path:
    """Save trajectories of 2-D flows side by side, one panel per model.

    Each panel shows start points (blue), end points (red), optional target samples (grey) and
    up to ``max_lines`` trajectories: curved, crossing lines mean many steps are needed.

    Args:
        panels: title -> (T, N, 2) trajectory (T >= 2 times).
        path: PNG file to write (parent folders are created).
        target: optional (M, 2) samples of the data distribution.
        max_lines: number of trajectories drawn per panel.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for title, traj in panels.items():
        if traj.dim() != 3 or traj.shape[-1] != 2 or traj.shape[0] < 2:
            raise ValueError(
                f"panel {title!r}: expected a (T>=2, N, 2) trajectory, got {traj.shape}"
            )
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 5), squeeze=False)
    for ax, (title, traj) in zip(axes[0], panels.items(), strict=True):
        tr = traj.detach().cpu().numpy()
        if target is not None:
            tg = target.detach().cpu().numpy()
            ax.scatter(tg[:, 0], tg[:, 1], s=2, c="0.75", label="target")
        ax.plot(tr[:, :max_lines, 0], tr[:, :max_lines, 1], color="olive", alpha=0.3, lw=0.6)
        ax.scatter(tr[0, :, 0], tr[0, :, 1], s=2, c="tab:blue", label="x0 (start)")
        ax.scatter(tr[-1, :, 0], tr[-1, :, 1], s=2, c="tab:red", label="x1 (ODE end)")
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.legend(loc="upper left", fontsize=7, markerscale=4)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def image_grid(x: Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """Tile images in [-1, 1] into one uint8 picture (torchvision's ``make_grid``).

    Args:
        x: (N, C, H, W) images with C in {1, 3}, values in [-1, 1] (clipped).
        nrow: images per row; a grid of fewer images keeps ``nrow`` columns (the rest black).
        pad: pixels of black border between images.

    Returns:
        (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) uint8 array.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"x must have shape (N, 1|3, H, W), got {tuple(x.shape)}")
    if nrow <= 0 or pad < 0:
        raise ValueError(f"need nrow > 0 and pad >= 0, got nrow={nrow}, pad={pad}")
    from torchvision.utils import make_grid

    x = x.detach().float().cpu()
    blank = x.new_full((max(0, nrow - len(x)), *x.shape[1:]), -1.0)  # -1 maps to black
    grid = make_grid(
        torch.cat([x, blank]), nrow=nrow, padding=pad, normalize=True, value_range=(-1, 1)
    )
    # [0, 1] -> 0..255 rounded as torchvision.utils.save_image does; make_grid repeats a single
    # channel three times, so keep the first C.
    pixels = grid[: x.shape[1]].mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 0).numpy()


def save_image(array: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, C) uint8 array (e.g. from :func:`image_grid`) as PNG (C=1: grayscale)."""
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"expected an (H, W, 1|3) uint8 array, got {array.dtype} {array.shape}")
    from torchvision.io import write_png

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(torch.from_numpy(array).permute(2, 0, 1).contiguous(), str(path))
    return path


def plot_points(x: Tensor, path: str | Path, size: float = 5.0) -> Path:
    """Scatter plot of 2-D samples (a toy model's "grid"), written as PNG whatever the suffix.

    Args:
        x: (N, 2) points.
        path: file to write (parent folders are created).
        size: figure width and height in inches.
    """
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (N, 2), got {tuple(x.shape)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = x.detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(size, size))
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.6)
    ax.set_aspect("equal")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path
