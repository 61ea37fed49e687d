"""Matplotlib figures of an NFE sweep, written to PNG files (logged to MLflow by the flow)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import torch

from rf_core.solver_spec import SolverSpec

matplotlib.use("Agg")  # headless: workers and CI have no display
import matplotlib.pyplot as plt


def plot_quality(rows: list, path: Path) -> Path:
    """Quality (FD for images, SWD for toys) against NFE, one line per model and guidance scale
    (a guided step costs two evaluations, so its points sit at twice the steps)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, w in dict.fromkeys((r.model, r.guidance) for r in rows):
        line = [r for r in rows if (r.model, r.guidance) == (name, w)]
        pts = [(r.nfe, r.fd if r.fd is not None else r.swd) for r in line]
        pts = sorted(p for p in pts if p[1] is not None)
        label = f"{name} w={w:g}" if w else name
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("NFE")
    ax.set_ylabel("Fréchet distance" if rows and rows[0].fd is not None else "sliced Wasserstein")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_sample_figure(samples: dict, path: Path, solver: str = "euler", n_show: int = 20) -> Path:
    """The one picture of a run: a row per model, a column per step count, the same noise and
    labels in every cell (the first ``n_show`` samples, ten per grid row).

    Args:
        samples: {(model, solver, steps): (N, C, H, W) samples in [-1, 1]} from the NFE sweep.
        path: PNG file to write.
        solver: which solver's rows to show (fixed-step).
        n_show: samples per cell.
    """
    from torchvision.utils import make_grid

    keys = [k for k in samples if k[1] == solver and k[2] is not None]
    models = list(dict.fromkeys(k[0] for k in keys))
    steps = sorted({k[2] for k in keys})
    cell_w = 3.0  # inches; a cell holds ten digits per row, so its height is cell_w / 10 per row
    cell_h = cell_w * -(-n_show // 10) / 10
    size = (cell_w * len(steps) + 0.4, (cell_h + 0.35) * len(models) + 0.2)
    fig, axes = plt.subplots(len(models), len(steps), figsize=size, squeeze=False)
    for i, name in enumerate(models):
        for j, k in enumerate(steps):
            x = samples[(name, solver, k)][:n_show].float().clamp(-1, 1)
            grid = make_grid(x, nrow=10, padding=1, normalize=True, value_range=(-1, 1))
            ax = axes[i][j]
            ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{k} step{'s' if k > 1 else ''} (NFE {k})", fontsize=9)
            if j == 0:
                ax.set_ylabel(name, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_samples(
    samples: dict, out: Path, toy: bool, n_show: int = 64, guidance: float = 0.0
) -> list[Path]:
    """Toys: one scatter figure per model (a panel per solver setting). Images: one grid PNG
    per (model, setting), e.g. ``grid_2rf_euler_1.png``, ``grid_2rf_euler_1_w2.png`` (guided)."""
    from rf_core.plots import image_grid, save_image

    paths = []
    for name in dict.fromkeys(k[0] for k in samples):
        keys = [k for k in samples if k[0] == name]
        if not toy:
            for _, solver, steps in keys:
                grid = image_grid(samples[(name, solver, steps)][:n_show])
                setting = SolverSpec(method=solver, steps=steps, guidance=guidance).label()
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
