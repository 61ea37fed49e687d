"""Pair generation benchmark, part 1: settings, error metrics, the seed recipe and the reference.

Pair error = RMS(x1 - x1_ref) / RMS(x1_ref) over all pairs; the reference is dopri5 at
rtol = atol = 1e-7 on the same noise. It is a float32 solve by default: the float64 solve
(:func:`reference_solve` with ``dtype=torch.float64``: weights, noise and time embedding in double)
was measured 4e-5 from it, 40x below the errors being compared, at 5x the CPU time
(``python -m benchmarks.pairgen --check-reference``). Candidates stay in float32, as generation
produces them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchdiffeq import odeint

import rf_core.models as rf_models
from rf_core.solvers import ADAPTIVE_METHODS, solve_ode
from rf_core.timegrids import time_grid

SEED_SOLVER = {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5}
REF_TOL = 1e-7


@dataclass(frozen=True)
class Setting:
    """One way to solve for pairs. ``grid``/``rho`` only matter for fixed-step methods."""

    method: str
    steps: int | None = None
    tol: float | None = None
    grid: str = "uniform"
    rho: float = 2.0

    @property
    def name(self) -> str:
        if self.method in ADAPTIVE_METHODS:
            return f"{self.method} tol={self.tol:g}"
        grid = self.grid if self.grid in ("uniform", "cosine") else f"{self.grid}{self.rho:g}"
        return f"{self.method}×{self.steps} {grid}"

    def solve_kwargs(self) -> dict:
        """Keyword arguments of :func:`rf_core.solvers.solve_ode`."""
        if self.method in ADAPTIVE_METHODS:
            return {"method": self.method, "rtol": self.tol, "atol": self.tol}
        grid = time_grid(self.grid, self.steps, rho=self.rho).tolist()
        return {"method": self.method, "t_grid": grid}


@dataclass(frozen=True)
class PairRow:
    """One measured setting. ``path``: seed (in memory) | solve_ode | zarr (generate_chunks).

    ``err_p50``/``err_max``: median and largest per-sample error (a sample's RMS difference over
    the reference's overall RMS), to see whether a few samples dominate ``pair_error``.
    """

    setting: str
    path: str
    batch: int
    nfe_per_pair: float
    pairs_per_s: float
    speedup: float
    pair_error: float
    err_p50: float
    err_max: float
    efficiency: float


def pair_error(x1: Tensor, x1_ref: Tensor) -> float:
    """RMS(x1 - x1_ref) / RMS(x1_ref) over all elements; shapes (N, *shape) must match."""
    if x1.shape != x1_ref.shape:
        raise ValueError(f"x1 {tuple(x1.shape)} and x1_ref {tuple(x1_ref.shape)} differ in shape")
    diff = (x1.double() - x1_ref.double()).pow(2).mean().sqrt()
    return float(diff / x1_ref.double().pow(2).mean().sqrt())


def sample_errors(x1: Tensor, x1_ref: Tensor) -> Tensor:
    """(N,) per-sample errors: RMS over each sample of x1 - x1_ref, over RMS(x1_ref).

    Their root mean square is :func:`pair_error`.
    """
    if x1.shape != x1_ref.shape:
        raise ValueError(f"x1 {tuple(x1.shape)} and x1_ref {tuple(x1_ref.shape)} differ in shape")
    diff = (x1.double() - x1_ref.double()).flatten(1).pow(2).mean(1).sqrt()
    return diff / x1_ref.double().pow(2).mean().sqrt()


def efficiency(pairs_per_s: float, nfe: float, forward_per_s: float) -> float:
    """Fraction of the time spent in model forwards: pairs/s * NFE / (forward images/s)."""
    return pairs_per_s * nfe / forward_per_s


def candidates() -> list[Setting]:
    """Settings screened against the reference: fixed-step solvers x step counts x grids.

    rk4 on the uniform grid and on the ends grid (rho=1.5) that led earlier screens at 6-10 steps
    (the "end" and "cosine" grids and heun2 never led, so they are left out to keep the CPU run
    short); midpoint at about rk4's NFE; dopri5 looser than the seed. In NFE order per family.
    """
    out = [Setting("midpoint", n) for n in (16, 24, 32)]
    out += [Setting("rk4", n) for n in (5, 6, 8, 10, 12, 14, 16)]
    out += [Setting("rk4", n, grid="ends", rho=1.5) for n in (6, 8, 12)]
    out += [Setting("dopri5", tol=t) for t in (1e-3, 1e-4)]
    return out


def tiny_settings() -> list[Setting]:
    """A handful of settings for the smoke run."""
    return [
        Setting("euler", 4),
        Setting("rk4", 4),
        Setting("rk4", 4, grid="cosine"),
        Setting("dopri5", tol=1e-3),
    ]


def store_solver(s: Setting, batch: int) -> dict:
    """The pair store's solver dict for a setting (storage.layout.SOLVER_KEYS).

    Uniform grids leave ``grid``/``rho`` out (the store's defaults); ``rho`` is written only for
    the grids whose points depend on it.
    """
    if s.method in ADAPTIVE_METHODS:
        return {"method": s.method, "rtol": s.tol, "atol": s.tol, "batch_size": batch}
    out = {"method": s.method, "steps": s.steps, "batch_size": batch}
    if s.grid != "uniform":
        out["grid"] = s.grid
        if s.grid in ("ends", "end", "start"):
            out["rho"] = s.rho
    return out


def choose_default(screen: list[PairRow], settings: list[Setting], max_error: float):
    """The cheapest setting within ``max_error``: fewest NFE per pair, then the fastest."""
    ok = [(row, s) for row, s in zip(screen, settings, strict=True) if row.pair_error <= max_error]
    if not ok:
        return None, None
    return min(ok, key=lambda rs: (rs[0].nfe_per_pair, -rs[0].pairs_per_s))


@torch.no_grad()
def seed_recipe(model: nn.Module, x0: Tensor, y: Tensor, batch_size: int = 256):
    """The seed's ``generate_paired_data`` solve: dopri5 1e-5 per batch, concatenated in memory.

    Returns:
        x1 (N, *shape) and the NFE per pair (max over batches, as for rectiflow).
    """
    model.eval()
    x1s, nfes = [], []
    for xb, yb in zip(x0.split(batch_size), y.split(batch_size), strict=True):
        calls = [0]

        def ode_func(t, x, yb=yb, calls=calls):
            calls[0] += 1
            return model(x, t.expand(x.size(0)), yb)

        traj = odeint(ode_func, xb, torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-5, method="dopri5")
        x1s.append(traj[-1].cpu())
        nfes.append(calls[0])
    return torch.cat(x1s), max(nfes)


def _embedding64(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """rf_core.models.timestep_embedding evaluated in float64.

    The frequencies are the model's own float32 values (part of the function being solved); only
    the product ``1000 t f`` and the sin/cos are taken in double, where float32 would round them.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = 1000.0 * t.double()[:, None] * freqs.double()[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(t.dtype)  # float32 t: as before
    return F.pad(emb, (0, dim % 2))


def reference_solve(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    tol: float = REF_TOL,
    batch_size: int = 256,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, int]:
    """dopri5 at rtol = atol = ``tol``; in float64 on a double copy of ``model`` if asked.

    Args:
        model: the float32 velocity field (left unchanged).
        x0: (N, *shape) float32 noise.
        y: (N,) labels.
        tol: rtol = atol of the reference solve.
        batch_size: samples per solve.
        dtype: torch.float32 (solve_ode as is) or torch.float64 (weights, noise, time embedding
            in double: 5x the CPU time; see :func:`benchmarks.pairgen_measure.reference_check`).

    Returns:
        x1 (N, *shape) in ``dtype`` and the NFE per pair (max over batches).
    """
    if dtype == torch.float32:
        res = solve_ode(model, x0, y, rtol=tol, atol=tol, batch_size=batch_size)
        return res.x1, res.nfe
    m64 = copy.deepcopy(model).double().eval()
    x1s, nfes = [], []
    # The model's embedding casts t to float32; swap in the double one for this solve only.
    saved, rf_models.timestep_embedding = rf_models.timestep_embedding, _embedding64
    try:
        with torch.inference_mode():
            for xb, yb in zip(x0.split(batch_size), y.split(batch_size), strict=True):
                calls = [0]

                def f(t, x, yb=yb, calls=calls):
                    calls[0] += 1
                    return m64(x, t.expand(x.shape[0]), yb)

                t = torch.tensor([0.0, 1.0], dtype=torch.float64, device=xb.device)
                x1s.append(odeint(f, xb.double(), t, rtol=tol, atol=tol, method="dopri5")[-1])
                nfes.append(calls[0])
    finally:
        rf_models.timestep_embedding = saved
    return torch.cat(x1s), max(nfes)


def time_wiggle(model: nn.Module, n_t: int = 301, width: float = 0.03) -> float:
    """High-frequency content of the field along t: RMS of v minus its best quadratic in t.

    A smooth field is a quadratic over a window of ``width`` in t to ~1e-5; what is left is an
    oscillation (from the sinusoidal embedding of 1000 t) that fixed-step solvers alias.
    Measured on one noise sample in windows starting at t = 0.1, 0.5, 0.9 (v and x: float32).

    Returns:
        the residual's RMS over the RMS of v, averaged over the three windows.
    """
    cfg = model.config
    x = torch.randn((1, *cfg.data_shape), generator=torch.Generator().manual_seed(0))
    y = torch.full((n_t,), min(3, cfg.num_classes - 1) if cfg.num_classes > 0 else -1)
    out = []
    for t0 in (0.1, 0.5, 0.9):
        ts = t0 + torch.linspace(0.0, width, n_t)
        with torch.inference_mode():
            v = model(x.expand(n_t, *cfg.data_shape), ts, y).flatten(1).double()
        basis = torch.stack([torch.ones_like(ts), ts - t0, (ts - t0) ** 2], 1).double()
        resid = v - basis @ torch.linalg.lstsq(basis, v).solution
        out.append(float(resid.pow(2).mean().sqrt() / v.pow(2).mean().sqrt()))
    return sum(out) / len(out)
