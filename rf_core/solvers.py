"""Solve the learned ODE ``dx/dt = v(x, t, y)`` from noise (t=0) to data (t=1) with torchdiffeq.

NFE is counted by :class:`NFECounter`, a wrapper around the model, never inferred from the method:
adaptive solvers spend a data-dependent number of evaluations (plus two to pick the first step).
With classifier-free guidance (:class:`GuidedVelocity`) the counter sits inside the guidance, so
both evaluations of a guided step are counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchdiffeq import odeint

from rf_core.guidance import GuidedVelocity, check_scale
from rf_core.models import check_inputs

FIXED_METHODS = (
    "euler",
    "midpoint",
    "heun2",
    "heun3",
    "rk4",
    "explicit_adams",
    "implicit_adams",
    "fixed_adams",
)
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun", "fehlberg2")
METHODS = FIXED_METHODS + ADAPTIVE_METHODS
# rtol and atol of adaptive methods unless given (the seed recipe's dopri5 tolerance).
DEFAULT_TOL = 1e-5


class NFECounter(nn.Module):
    """Wrap a velocity model and count its forward calls in ``self.nfe``.

    Calls pass through unchanged: ``counter(x, t, y) == model(x, t, y)``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.nfe = 0

    @property
    def config(self):
        """The wrapped model's ModelConfig."""
        return self.model.config

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, *shape), (B,), (B,) -> (B, *shape); increments ``nfe``."""
        self.nfe += 1
        return self.model(x, t, y)


@dataclass(frozen=True)
class SolveResult:
    """Result of :func:`solve_ode`.

    Attributes:
        x1: (N, *shape) states at ``t1``.
        nfe: model evaluations for one batch pass (max over batches when split).
        nfe_total: model evaluations summed over all batches.
        trajectory: (T, N, *shape) states at ``t`` when requested, else None.
        t: (T,) times of ``trajectory`` when requested, else None.
    """

    x1: Tensor
    nfe: int
    nfe_total: int
    trajectory: Tensor | None = None
    t: Tensor | None = None


def _check_solver_args(method, steps, rtol, atol, t_grid, t0, t1, batch_size) -> None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; allowed: {', '.join(METHODS)}")
    if not 0.0 <= t0 < t1 <= 1.0:
        raise ValueError(f"need 0 <= t0 < t1 <= 1, got t0={t0}, t1={t1}")
    if batch_size is not None and batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size}")
    if method in ADAPTIVE_METHODS:
        if steps is not None or t_grid is not None:
            raise ValueError(
                f"steps/t_grid apply to fixed-step methods ({', '.join(FIXED_METHODS)}); "
                f"method={method!r} is adaptive: use rtol/atol"
            )
        if rtol <= 0 or atol <= 0:
            raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
        return
    if t_grid is None and (steps is None or int(steps) != steps or steps <= 0):
        raise ValueError(f"method={method!r} needs steps as a positive int or t_grid, got {steps}")


def _time_grid(method, steps, t_grid, t0, t1, traj_points, return_trajectory) -> Tensor:
    """Times handed to odeint; for fixed-step methods they ARE the step grid."""
    if t_grid is not None:
        grid = torch.as_tensor(list(t_grid), dtype=torch.float64)
        if grid.dim() != 1 or len(grid) < 2 or not bool((grid[1:] > grid[:-1]).all()):
            raise ValueError(f"t_grid must be strictly increasing with >= 2 points, got {t_grid}")
        if abs(float(grid[0]) - t0) > 1e-9 or abs(float(grid[-1]) - t1) > 1e-9:
            raise ValueError(f"t_grid must start at t0={t0} and end at t1={t1}, got {t_grid}")
        if steps is not None and steps != len(grid) - 1:
            raise ValueError(f"steps={steps} disagrees with t_grid ({len(grid) - 1} intervals)")
        return grid.float()
    if method in FIXED_METHODS:
        return torch.linspace(t0, t1, steps + 1)
    # Adaptive: extra output times are interpolated by the solver and cost no evaluations.
    return torch.linspace(t0, t1, traj_points if return_trajectory else 2)


def _solve_batch(model, x0, y, grid, method, rtol, atol, guidance):
    counter = NFECounter(model)
    field = GuidedVelocity(counter, guidance) if guidance else counter

    def f(t: Tensor, x: Tensor) -> Tensor:
        return field(x, t.expand(x.shape[0]), y)

    xs = odeint(f, x0, grid.to(x0.device), rtol=rtol, atol=atol, method=method)
    return xs, counter.nfe


def solve_ode(
    model: nn.Module,
    x0: Tensor,
    y: Tensor | None = None,
    method: str = "dopri5",
    steps: int | None = None,
    rtol: float = DEFAULT_TOL,
    atol: float = DEFAULT_TOL,
    batch_size: int | None = None,
    t0: float = 0.0,
    t1: float = 1.0,
    return_trajectory: bool = False,
    t_grid: Sequence[float] | None = None,
    traj_points: int = 11,
    device: str | torch.device | None = None,
    guidance: float = 0.0,
) -> SolveResult:
    """Integrate ``dx/dt = model(x, t, y)`` from ``t0`` to ``t1``.

    Args:
        model: velocity field with ``.config``; put in eval mode for the call (mode restored).
        x0: (N, *data_shape) start states (noise).
        y: (N,) int64 labels, -1 = unconditional; None means all -1.
        method: a torchdiffeq method, one of :data:`METHODS`.
        steps: number of uniform steps for fixed-step methods (None for adaptive ones).
        rtol: relative tolerance of adaptive methods.
        atol: absolute tolerance of adaptive methods.
        batch_size: solve in batches of this size (each batch gets its own adaptive steps).
        t0: start time.
        t1: end time.
        return_trajectory: also return states at the time grid (fixed: every step; adaptive:
            ``traj_points`` uniform times).
        t_grid: explicit increasing step grid from ``t0`` to ``t1`` for fixed-step methods.
        traj_points: number of trajectory times for adaptive methods.
        device: run the batches on this device (default: x0's); results come back to x0's device.
        guidance: classifier-free guidance scale ``w`` (:class:`GuidedVelocity`); 0 = unguided.
            Each guided step costs two evaluations, and NFE counts both. Whether the model's
            null label was trained is the caller's check (:func:`rf_core.guidance.check_guidance`).

    Returns:
        SolveResult with x1 (N, *data_shape), nfe, nfe_total and the optional trajectory.

    Raises:
        ValueError: unknown method, bad steps/tolerances/grid, or x0/y not matching the model.
    """
    _check_solver_args(method, steps, rtol, atol, t_grid, t0, t1, batch_size)
    check_scale(guidance)
    if x0.dim() == 0 or x0.shape[0] == 0:
        raise ValueError(f"x0 must hold at least one sample, got shape {tuple(x0.shape)}")
    y = torch.full((x0.shape[0],), -1, dtype=torch.long, device=x0.device) if y is None else y
    check_inputs(model.config, x0, y=y)
    grid = _time_grid(method, steps, t_grid, t0, t1, traj_points, return_trajectory)
    device = x0.device if device is None else torch.device(device)
    bs = batch_size or max(x0.shape[0], 1)
    was_training = model.training
    model.eval()
    outs, nfes = [], []
    try:
        with torch.inference_mode():
            for xb, yb in zip(x0.split(bs), y.split(bs), strict=True):
                xb, yb = xb.to(device), yb.to(device)
                xs, nfe = _solve_batch(model, xb, yb, grid, method, rtol, atol, guidance)
                outs.append(xs if return_trajectory else xs[-1:])
                nfes.append(nfe)
    finally:
        model.train(was_training)
    xs = torch.cat(outs, dim=1).to(x0.device)
    traj, times = (xs, grid) if return_trajectory else (None, None)
    return SolveResult(x1=xs[-1], nfe=max(nfes), nfe_total=sum(nfes), trajectory=traj, t=times)
