"""Reflow on a 2-D toy in about a minute on a CPU, no Prefect, no MLflow.

Trains 1-RF (8 Gaussians -> moons), generates (x0, ODE(x0)) pairs with dopri5, trains 2-RF
initialised from 1-RF on them, prints straightness and one-step sliced Wasserstein distance of both,
and draws both trajectory sets side by side:
``python -m flows.toy_demo [out_dir] [--overwrite]``.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import torch

from rf_core.config import ModelConfig, TrainConfig
from rf_core.data import sample_toy
from rf_core.metrics import sliced_wasserstein, straightness
from rf_core.models import build_model
from rf_core.plots import plot_trajectories
from rf_core.solvers import solve_ode
from rf_core.training import fit, minibatches, save_checkpoint

SOURCE, TARGET = "8gaussians", "moons"
BATCH, N_PAIRS, N_EVAL = 256, 4096, 2000
OUTPUTS = ("trajectories.png", "1rf.pt", "2rf.pt")


def train_1rf(cfg: ModelConfig, steps: int, g: torch.Generator) -> torch.nn.Module:
    """Flow matching on independent (source, target) pairs drawn fresh every step."""
    unlabelled = torch.full((BATCH,), -1)

    def batch(step: int):
        return sample_toy(SOURCE, BATCH, g), sample_toy(TARGET, BATCH, g), unlabelled

    torch.manual_seed(0)
    tc = TrainConfig(steps=steps, batch_size=BATCH, lr=3e-3, ema_decay=0.99)
    return fit(build_model(cfg), batch, tc).model


def train_reflow(model: torch.nn.Module, steps: int, g: torch.Generator) -> torch.nn.Module:
    """(k+1)-RF: solve k-RF's ODE from fresh source points, retrain (from k-RF) on those pairs."""
    x0 = sample_toy(SOURCE, N_PAIRS, g)
    x1 = solve_ode(model, x0, method="dopri5", rtol=1e-4, atol=1e-4).x1
    pairs = minibatches((x0, x1, torch.full((N_PAIRS,), -1)), BATCH, g)
    tc = TrainConfig(steps=steps, batch_size=BATCH, lr=1e-3, ema_decay=0.99, seed=1)
    return fit(copy.deepcopy(model).train(), pairs, tc).model


def report(model: torch.nn.Module, x0: torch.Tensor, target: torch.Tensor) -> dict:
    """Straightness on the model's own ODE pairs; sliced W2 of its 1-step Euler samples."""
    ode = solve_ode(model, x0, method="dopri5", rtol=1e-4, atol=1e-4, return_trajectory=True)
    one_step = solve_ode(model, x0, method="euler", steps=1).x1
    return {
        "straightness": straightness(model, x0, ode.x1),
        "swd_1step": sliced_wasserstein(one_step, target, 256, torch.Generator().manual_seed(7)),
        "swd_ode": sliced_wasserstein(ode.x1, target, 256, torch.Generator().manual_seed(7)),
        "nfe_ode": ode.nfe,
        "trajectory": ode.trajectory,
    }


def main(
    out_dir: Path = Path("runs/toy2d"),
    steps_1rf: int = 1500,
    steps_2rf: int = 1000,
    overwrite: bool = False,
) -> dict:
    """Train 1-RF and 2-RF on the toy, write ``trajectories.png`` and checkpoints to ``out_dir``.

    Args:
        out_dir: folder for ``trajectories.png``, ``1rf.pt`` and ``2rf.pt``.
        steps_1rf: training steps of 1-RF.
        steps_2rf: training steps of 2-RF.
        overwrite: replace the outputs of an earlier run (refused by default, checked up front).

    Returns:
        {"1rf": {...}, "2rf": {...}, "figure": path, "seconds": float} with straightness,
        swd_1step, swd_ode and nfe_ode per model.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    existing = [str(out_dir / f) for f in OUTPUTS if (out_dir / f).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist: choose another out_dir or overwrite")
    g = torch.Generator().manual_seed(0)
    cfg = ModelConfig(kind="mlp", data_shape=(2,), hidden=64, depth=3)
    rf1 = train_1rf(cfg, steps_1rf, g)
    rf2 = train_reflow(rf1, steps_2rf, g)
    eval_g = torch.Generator().manual_seed(123)  # fresh draws, unseen in training
    x0, target = sample_toy(SOURCE, N_EVAL, eval_g), sample_toy(TARGET, N_EVAL, eval_g)
    results = {"1rf": report(rf1, x0, target), "2rf": report(rf2, x0, target)}
    panels = {}
    for name, r in results.items():
        title = f"{name[0]}-RF   S={r['straightness']:.3f}   1-step SW={r['swd_1step']:.3f}"
        panels[title] = r.pop("trajectory")
    figure = plot_trajectories(panels, out_dir / "trajectories.png", target=target)
    for name, model in (("1rf", rf1), ("2rf", rf2)):
        extra = {"toy": f"{SOURCE}->{TARGET}"}
        save_checkpoint(out_dir / f"{name}.pt", model, extra=extra, overwrite=overwrite)
    for name, r in results.items():
        print(
            f"{name}: straightness {r['straightness']:.4f}  1-step sliced W2 {r['swd_1step']:.4f}"
            f"  dopri5 sliced W2 {r['swd_ode']:.4f} (NFE {r['nfe_ode']})"
        )
    print(f"wrote {figure} in {time.perf_counter() - start:.1f} s")
    return {**results, "figure": str(figure), "seconds": time.perf_counter() - start}


if __name__ == "__main__":
    torch.set_num_threads(1)  # tiny MLPs: extra threads only add synchronisation cost
    args = [a for a in sys.argv[1:] if a != "--overwrite"]
    main(Path(args[0]) if args else Path("runs/toy2d"), overwrite="--overwrite" in sys.argv)
