"""Metrics: straightness of a flow, and sample-based distances between point clouds."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rf_core.models import check_inputs
from rf_core.paths import interpolate, target_velocity


def straightness(
    model: nn.Module,
    x0: Tensor,
    x1: Tensor,
    y: Tensor | None = None,
    n_t: int = 16,
    batch_size: int | None = None,
) -> float:
    """``S = ∫_0^1 E ||(x1 - x0) - v(x_t, t)||^2 dt`` by the midpoint rule on ``n_t`` times.

    With ``x1`` the model's own ODE endpoints of ``x0`` (Liu et al., 2022), S = 0 means the
    trajectories are straight lines, so one Euler step is exact.

    Args:
        model: velocity field with ``.config``.
        x0: (N, *shape) start points.
        x1: (N, *shape) end points paired with x0.
        y: (N,) labels, None = all -1.
        n_t: number of grid times ``(i + 0.5) / n_t``.
        batch_size: evaluate in batches of this many samples.

    Returns:
        S as a float (squared norm summed over dimensions, averaged over samples and times).
    """
    if n_t <= 0:
        raise ValueError(f"n_t must be a positive int, got {n_t}")
    if x1.shape != x0.shape:
        raise ValueError(f"x1 has shape {tuple(x1.shape)}; expected x0's {tuple(x0.shape)}")
    y = torch.full((x0.shape[0],), -1, dtype=torch.long, device=x0.device) if y is None else y
    check_inputs(model.config, x0, y=y)
    bs = batch_size or x0.shape[0]
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.inference_mode():
            for i in range(n_t):
                for a, b, yb in zip(x0.split(bs), x1.split(bs), y.split(bs), strict=True):
                    t = torch.full((a.shape[0],), (i + 0.5) / n_t, device=a.device)
                    err = target_velocity(a, b) - model(interpolate(a, b, t), t, yb)
                    total += float(err.flatten(1).square().sum())
    finally:
        model.train(was_training)
    return total / (n_t * x0.shape[0])


def _flat_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("a and b must hold at least one sample each")
    return a, b


def sliced_wasserstein(
    a: Tensor, b: Tensor, n_proj: int = 128, generator: torch.Generator | None = None
) -> float:
    """Sliced 2-Wasserstein distance between two point clouds.

    Projects both onto ``n_proj`` random unit directions and compares the sorted projections
    (quantiles when the sizes differ).

    Args:
        a: (N, *shape) samples.
        b: (M, *shape) samples.
        n_proj: number of random directions.
        generator: CPU RNG for the directions.

    Returns:
        ``sqrt(mean over directions of W2^2)``.
    """
    if n_proj <= 0:
        raise ValueError(f"n_proj must be a positive int, got {n_proj}")
    a, b = _flat_pair(a.cpu(), b.cpu())
    dirs = torch.randn(a.shape[1], n_proj, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, pb = (a @ dirs).sort(dim=0).values, (b @ dirs).sort(dim=0).values
    if pa.shape[0] != pb.shape[0]:
        m = min(pa.shape[0], pb.shape[0])
        q = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        pa, pb = torch.quantile(pa, q, dim=0), torch.quantile(pb, q, dim=0)
    return float((pa - pb).square().mean().sqrt())


def mmd_rbf(a: Tensor, b: Tensor, bandwidth: float | None = None) -> float:
    """Squared maximum mean discrepancy with a Gaussian kernel (biased V-statistic, >= 0).

    Args:
        a: (N, *shape) samples.
        b: (M, *shape) samples.
        bandwidth: kernel width sigma; None = median pairwise distance of the pooled samples.

    Returns:
        MMD^2 as a float.
    """
    a, b = _flat_pair(a.cpu(), b.cpu())
    d_aa, d_bb, d_ab = torch.cdist(a, a), torch.cdist(b, b), torch.cdist(a, b)
    if bandwidth is None:
        bandwidth = float(torch.cat([d_aa.flatten(), d_bb.flatten(), d_ab.flatten()]).median())
    if bandwidth <= 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth}")

    def k(d: Tensor) -> Tensor:
        return torch.exp(-d.square() / (2 * bandwidth**2))

    return float((k(d_aa).mean() + k(d_bb).mean() - 2 * k(d_ab).mean()).clamp_min(0.0))


def endpoint_error(a: Tensor, b: Tensor) -> float:
    """Mean per-sample Euclidean distance ``E ||a_i - b_i||`` between paired samples.

    Args:
        a: (N, *shape), e.g. few-step samples.
        b: (N, *shape), e.g. the adaptive-solver endpoints of the same noise.
    """
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape, got {tuple(a.shape)} vs {tuple(b.shape)}"
        )
    return float((a - b).flatten(1).norm(dim=1).mean())
