"""Time grids for fixed-step ODE solvers: where to spend a fixed budget of steps in [t0, t1].

A learned rectified-flow field is most curved near the ends of the path (near t=0 the velocity
points at the data mean, near t=1 the sample snaps onto its mode), so grids that are denser there
can lower the error of a fixed-step solver at the same NFE. Which grid helps is measured in
``benchmarks/pairgen.py``, not assumed.

Grids are 1-D float64 tensors, strictly increasing, starting at ``t0`` and ending at ``t1``; pass
them to :func:`rf_core.solvers.solve_ode` as ``t_grid``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

GRIDS = ("uniform", "cosine", "ends", "end", "start")
# The grids whose points depend on rho; for the others rho is unused.
RHO_GRIDS = ("ends", "end", "start")


def _unit_grid(kind: str, steps: int, rho: float) -> Tensor:
    """Grid on [0, 1] with ``steps`` intervals."""
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if kind == "uniform":
        return u
    if kind == "cosine":
        # Denser near both ends: s(u) = (1 - cos(pi u)) / 2, slope 0 at u = 0 and u = 1.
        return 0.5 * (1.0 - torch.cos(math.pi * u))
    if kind == "end":
        # Denser near t = 1 (the data end): t = 1 - (1 - u)^rho.
        return 1.0 - (1.0 - u) ** rho
    if kind == "start":
        # Denser near t = 0 (the noise end): t = u^rho.
        return u**rho
    # "ends": t = u^rho / (u^rho + (1 - u)^rho), symmetric and denser near both ends for rho > 1.
    return u**rho / (u**rho + (1.0 - u) ** rho)


def time_grid(
    kind: str = "uniform", steps: int = 8, t0: float = 0.0, t1: float = 1.0, rho: float = 2.0
) -> Tensor:
    """A fixed-step time grid.

    Args:
        kind: one of :data:`GRIDS`: ``"uniform"``; ``"cosine"`` (denser near both ends);
            ``"ends"`` (denser near both ends, strength ``rho``); ``"end"`` (denser near t1);
            ``"start"`` (denser near t0).
        steps: number of intervals (solver steps), >= 1.
        t0: start time.
        t1: end time.
        rho: strength of the concentration for ``"ends"``, ``"end"`` and ``"start"`` (1 gives
            the uniform grid); must be > 0.

    Returns:
        (steps + 1,) float64 tensor, strictly increasing from ``t0`` to ``t1``.

    Raises:
        ValueError: unknown kind, steps < 1, rho <= 0, or not t0 < t1.
    """
    if kind not in GRIDS:
        raise ValueError(f"kind={kind!r} is unknown; allowed: {', '.join(GRIDS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    if not t0 < t1:
        raise ValueError(f"need t0 < t1, got t0={t0}, t1={t1}")
    g = t0 + (t1 - t0) * _unit_grid(kind, steps, rho)
    g[0], g[-1] = t0, t1  # exact ends, whatever the rounding
    return g
