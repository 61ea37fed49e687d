"""Image perturbations: training augmentation for the digit classifier, and known degradations.

``augment_batch`` deforms digits the way handwriting varies (small rotations, shifts, scaling,
shear, a smooth elastic warp), so the classifier learns those as "the same digit". The
degradations (``DEGRADATIONS``) are what a broken generator draws — pixel blocks, speckle, blur,
broken strokes — and are never used in training, so the classifier's features stay sensitive to
them; the evaluation's sanity check scores them (docs/evaluation.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

MAX_ROTATE_DEG = 12.0
MAX_SHIFT = 0.15  # of the half-width: ±2 pixels on 28×28
SCALE_RANGE = (0.9, 1.1)
MAX_SHEAR = 0.15
ELASTIC_GRID = 4  # control points per side of the smooth displacement field
ELASTIC_STD = 0.03  # displacement std, in normalised coordinates (~0.4 px on 28×28)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def augment_batch(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random affine + elastic deformation of each image (background -1 stays -1).

    Args:
        x: (B, C, H, W) images in [-1, 1] (on any device).
        gen: CPU generator deciding every random draw.

    Returns:
        (B, C, H, W) deformed images in [-1, 1].
    """
    b = x.shape[0]
    angle = _uniform(b, -MAX_ROTATE_DEG, MAX_ROTATE_DEG, gen) * math.pi / 180
    scale = _uniform(b, *SCALE_RANGE, gen)
    shear = _uniform(b, -MAX_SHEAR, MAX_SHEAR, gen)
    shift = _uniform(2 * b, -MAX_SHIFT, MAX_SHIFT, gen).view(b, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin + shear, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)],
        1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    coarse = ELASTIC_STD * torch.randn((b, 2, ELASTIC_GRID, ELASTIC_GRID), generator=gen)
    warp = F.interpolate(coarse, size=x.shape[-2:], mode="bicubic", align_corners=False)
    grid = (grid + warp.permute(0, 2, 3, 1)).to(x.device, x.dtype)
    # Sample (x + 1) with zero padding: pixels from outside the image are background (-1).
    out = F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out - 1).clamp(-1, 1)


# ---------------------------------------------------------------------------------------------
# degradations of real digits (the sanity check of the metric)


def pixelate(x: Tensor, block: int = 2) -> Tensor:
    """Average ``block``×``block`` pixel blocks, then repeat them (blocky digits)."""
    return F.interpolate(F.avg_pool2d(x, block), scale_factor=block, mode="nearest")


def speckle(x: Tensor, frac: float, seed: int = 0) -> Tensor:
    """Salt-and-pepper noise: a fraction ``frac`` of the pixels set to -1 or +1 at random."""
    g = torch.Generator().manual_seed(seed)
    hit = torch.rand(x.shape, generator=g) < frac
    value = torch.where(torch.rand(x.shape, generator=g) < 0.5, -1.0, 1.0)
    return torch.where(hit, value, x)


def box_blur(x: Tensor, size: int) -> Tensor:
    """Mean over a ``size``×``size`` window (odd size, replicate padding)."""
    r = size // 2
    return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), size, stride=1)


def erase_patches(x: Tensor, n: int = 4, size: int = 4, seed: int = 0) -> Tensor:
    """Broken strokes: ``n`` patches of ``size``×``size`` per image, each centred on a random
    ink pixel (> 0), set to background (-1)."""
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = x.shape
    ink = (x.amax(1).flatten(1) > 0).float() + 1e-6  # (B, H*W); blank images: anywhere
    centre = torch.multinomial(ink, n, replacement=True, generator=g)  # (B, n)
    top = (centre // w - size // 2).clamp(0, h - size).view(b, n, 1, 1)
    left = (centre % w - size // 2).clamp(0, w - size).view(b, n, 1, 1)
    rows = torch.arange(h).view(1, 1, h, 1)
    cols = torch.arange(w).view(1, 1, 1, w)
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return torch.where(inside.any(1, keepdim=True), torch.full_like(x, -1.0), x)


# name -> degradation of (N, C, H, W) images in [-1, 1]; ordered from mild to strong per kind.
DEGRADATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "pixelate 2×2": lambda x: pixelate(x, 2),
    "speckle 2%": lambda x: speckle(x, 0.02),
    "speckle 5%": lambda x: speckle(x, 0.05),
    "speckle 10%": lambda x: speckle(x, 0.10),
    "box blur 3×3": lambda x: box_blur(x, 3),
    "box blur 5×5": lambda x: box_blur(x, 5),
    "erase 4 patches 4×4": lambda x: erase_patches(x, 4, 4),
}
