"""Pair error: how far a solver's pairs are from a tight reference solve of the same noise.

For pairs ``x1`` (N, *shape) solved from noise ``x0`` and a reference ``x1_ref`` solved from the
same ``x0`` (and labels) with dopri5 at rtol = atol = :data:`REFERENCE_TOL`::

    e_i        = RMS over the elements of sample i of (x1_i - x1_ref_i) / RMS(x1_ref)
    pair error = sqrt(mean_i e_i^2) = RMS(x1 - x1_ref) / RMS(x1_ref)   (over every element)

The denominator is the reference's RMS over all pairs, so a tolerance means the same for images
in [-1, 1] and for latents of another scale, and one hard sample counts by its share of the whole
error. The float32 reference was measured 4e-5 away from a float64 one on the MNIST-5k U-Net
(BENCHMARKS.md), so pair errors well above 1e-4 are resolved by it.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from rf_core.solvers import SolveResult, solve_ode

# rtol = atol of the reference solve (dopri5).
REFERENCE_TOL = 1e-7
# Standard errors added to the mean squared error by error_bound: a one-sided 95 % bound.
ERROR_BOUND_Z = 1.645


def sample_errors(x1: Tensor, x1_ref: Tensor) -> Tensor:
    """(N,) per-sample errors ``e_i`` (float64): RMS over sample i of x1 - x1_ref, over the
    RMS of x1_ref over all pairs. Their root mean square is :func:`pair_error`.

    Raises:
        ValueError: the shapes differ.
    """
    if x1.shape != x1_ref.shape:
        raise ValueError(f"x1 {tuple(x1.shape)} and x1_ref {tuple(x1_ref.shape)} differ in shape")
    diff = (x1.double() - x1_ref.double()).flatten(1).pow(2).mean(1).sqrt()
    return diff / x1_ref.double().pow(2).mean().sqrt()


def pair_error(x1: Tensor, x1_ref: Tensor) -> float:
    """RMS(x1 - x1_ref) / RMS(x1_ref) over all elements; shapes (N, *shape) must match."""
    return float(sample_errors(x1, x1_ref).pow(2).mean().sqrt())


def error_bound(errors: Tensor, z: float = ERROR_BOUND_Z) -> float:
    """An upper confidence bound of the pair error on new noise, from (N,) per-sample errors.

    ``sqrt(mean(e^2) + z * sd(e^2) / sqrt(N))``: the mean squared error plus ``z`` standard
    errors of it. A few hard samples widen the bound, so a solver whose error on the probe draws
    is just under a tolerance because the draws happened to be easy does not pass.
    """
    sq = errors.double().pow(2)
    sd = float(sq.std()) if len(sq) > 1 else 0.0
    return math.sqrt(float(sq.mean()) + z * sd / math.sqrt(len(sq)))


def reference_solve(
    model: nn.Module,
    x0: Tensor,
    y: Tensor | None,
    tol: float = REFERENCE_TOL,
    batch_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> SolveResult:
    """dopri5 at rtol = atol = ``tol`` through ``solve_ode``; on a double copy for float64.

    Args:
        model: the velocity field (left unchanged).
        x0: (N, *shape) float32 noise.
        y: (N,) labels, or None (unconditional).
        tol: rtol = atol of the reference solve.
        batch_size: samples per solve (None: one batch).
        dtype: torch.float32, or torch.float64 (about 5x the CPU time).
        device: where to solve (default: x0's).

    Returns:
        The SolveResult: x1 (N, *shape) in ``dtype`` and the NFE per pair.
    """
    if dtype != torch.float32:
        model, x0 = copy.deepcopy(model).to(dtype), x0.to(dtype)
    return solve_ode(model, x0, y, rtol=tol, atol=tol, batch_size=batch_size, device=device)
