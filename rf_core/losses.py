"""Flow-matching regression loss; the same function trains 1-RF and k-RF.

Which model you get is decided only by the coupling of the (x0, x1) pairs you pass: independent
noise/data pairs give 1-RF, pairs (x0, ODE_k(x0)) from the k-RF model give (k+1)-RF.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from rf_core.models import check_inputs
from rf_core.paths import interpolate, target_velocity

LOSSES = ("mse", "pseudo_huber")


def pseudo_huber_c(dim: int) -> float:
    """RF++ constant ``c = 0.00054 * sqrt(d)`` for data of ``d`` dimensions."""
    return 0.00054 * math.sqrt(dim)


def rf_loss(
    model: nn.Module, x0: Tensor, x1: Tensor, y: Tensor | None, t: Tensor, kind: str = "mse"
) -> Tensor:
    """Regress ``model(x_t, t, y)`` on ``x1 - x0``.

    Args:
        model: velocity field with ``.config``.
        x0: (B, *shape) noise.
        x1: (B, *shape) data (1-RF) or ODE endpoints of x0 (reflow).
        y: (B,) int64 labels, -1 = unconditional; None means all -1.
        t: (B,) times in [0, 1].
        kind: ``mse`` (mean over all elements) or ``pseudo_huber`` (RF++: per-sample
            ``sqrt(||v - u||^2 + c^2) - c`` with ``c = 0.00054 sqrt(d)``, averaged over the batch).

    Returns:
        Scalar loss.
    """
    if kind not in LOSSES:
        raise ValueError(f"kind={kind!r} is unknown; allowed: {', '.join(LOSSES)}")
    if x1.shape != x0.shape:
        raise ValueError(f"x1 has shape {tuple(x1.shape)}; expected x0's {tuple(x0.shape)}")
    y = torch.full((x0.shape[0],), -1, dtype=torch.long, device=x0.device) if y is None else y
    check_inputs(model.config, x0, t=t, y=y)
    err = model(interpolate(x0, x1, t), t, y) - target_velocity(x0, x1)
    if kind == "mse":
        return err.square().mean()
    c = pseudo_huber_c(err[0].numel())
    sq = err.flatten(1).square().sum(dim=1)
    return (torch.sqrt(sq + c * c) - c).mean()
