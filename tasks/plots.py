"""Matplotlib figures of an NFE sweep, written to PNG files (logged to MLflow by the flow)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import torch

from rf_core.solver_spec import SolverSpec

matplotlib.use("Agg")  # headless: workers and CI have no display
import matplotlib.pyplot as plt


def plot_quality(rows: list, path: Path) -> Path:
    """Quality (FD for images, SWD for toys) against NFE, one line per model (Euler rows)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in dict.fromkeys(r.model for r in rows):
        pts = [(r.nfe, r.fd if r.fd is not None else r.swd) for r in rows if r.model == name]
        pts = sorted(p for p in pts if p[1] is not None)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("NFE")
    ax.set_ylabel("Fréchet distance" if rows and rows[0].fd is not None else "sliced Wasserstein")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_samples(samples: dict, out: Path, toy: bool, n_show: int = 64) -> list[Path]:
    """Toys: one scatter figure per model (a panel per solver setting). Images: one grid PNG
    per (model, setting), e.g. ``grid_2rf_euler_1.png``."""
    from rf_core.plots import image_grid, save_image

    paths = []
    for name in dict.fromkeys(k[0] for k in samples):
        keys = [k for k in samples if k[0] == name]
        if not toy:
            for _, solver, steps in keys:
                grid = image_grid(samples[(name, solver, steps)][:n_show])
                setting = SolverSpec(method=solver, steps=steps).label()
                paths.append(save_image(grid, out / f"grid_{name}_{setting}.png"))
            continue
        fig, axes = plt.subplots(1, len(keys), figsize=(2.4 * len(keys), 2.6), squeeze=False)
        for ax, key in zip(axes[0], keys, strict=True):
            x = samples[key]
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
            ax.set_aspect("equal")
            ax.set_title(f"{key[1]} {key[2] or ''}".strip(), fontsize=8)
        fig.suptitle(name)
        fig.tight_layout()
        path = out / f"samples_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_toy_trajectories(
    models: dict, x0: torch.Tensor, target: torch.Tensor, path: Path, n_lines: int = 300
) -> Path:
    """Trajectories of every model from the same start points, one panel per model.

    Solved with dopri5 (the model's own ODE, not a few Euler steps): what is drawn is how curved
    the flow is, which is what reflow straightens.

    Args:
        models: {name: 2-D velocity model}.
        x0: (N, 2) shared start points (the first ``n_lines`` are drawn).
        target: (M, 2) fresh samples of the data distribution (grey in each panel).
        path: PNG file to write.
    """
    from rf_core.plots import plot_trajectories
    from rf_core.solvers import solve_ode

    panels = {}
    for name, model in models.items():
        res = solve_ode(
            model, x0[:n_lines], method="dopri5", rtol=1e-4, atol=1e-4, return_trajectory=True
        )
        panels[f"{name} (dopri5, {res.nfe} NFE)"] = res.trajectory
    return plot_trajectories(panels, path, target=target)
