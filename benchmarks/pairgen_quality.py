"""Does the default pair solver hurt reflow? 2-RF on default pairs vs 2-RF on seed-recipe pairs.

Run through ``python -m benchmarks.pairgen --quality``. Both 2-RF models start from the same 1-RF
weights and get the same training budget, batch order and time samples; they differ only in x1 of
their pairs. Score: Fréchet distance (classifier features, rf_core.frechet) of 1-step Euler
samples from the same noise and labels; the target is default within 5% of seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.common import machine_line, markdown_table, write_section
from rf_core.classifier import train_classifier
from rf_core.config import TrainConfig
from rf_core.data import load_mnist5k
from rf_core.frechet import FrechetEvaluator
from rf_core.solvers import solve_ode
from rf_core.training import clone_model, fit, minibatches


@dataclass(frozen=True)
class QualityRow:
    """One 2-RF model: which pairs it saw and its 1-step score."""

    pairs: str
    nfe_per_pair: int
    fd_1step: float
    class_acc_1step: float
    vs_seed: float


def quality_check(
    model: nn.Module,
    setting,
    n_pairs: int = 256,
    steps: int = 60,
    n_eval: int = 256,
    write: bool = True,
    log=print,
    command: str = "python -m benchmarks.pairgen --quality",
) -> list[QualityRow]:
    """Train two 2-RF models on seed-recipe and ``setting`` pairs; compare FD at 1 step.

    Args:
        model: the 1-RF model (pairs source and 2-RF initialisation).
        setting: a :class:`benchmarks.pairgen.Setting` (the chosen default); None skips.
        n_pairs: pairs per pair set.
        steps: 2-RF optimizer steps (same for both).
        n_eval: 1-step samples scored per model.
        write: rewrite BENCHMARKS.md's ``pairgen-quality`` section.
        log: progress printer.
        command: the command line recorded in the section.
    """
    from benchmarks.pairgen import seed_recipe

    if setting is None:
        log("quality check skipped: no default setting was chosen")
        return []
    start = time.perf_counter()
    g = torch.Generator().manual_seed(123)
    shape = model.config.data_shape
    x0 = torch.randn((n_pairs, *shape), generator=g)
    y = torch.randint(0, model.config.num_classes, (n_pairs,), generator=g)
    seed_x1, seed_nfe = seed_recipe(model, x0, y)
    res = solve_ode(model, x0, y, batch_size=256, **setting.solve_kwargs())
    x_test, _ = load_mnist5k("test")
    x_train, y_train = load_mnist5k("train")
    if tuple(x_test.shape[1:]) != shape:  # tiny smoke model
        x_test = nn.functional.interpolate(x_test, size=shape[1:], mode="area")
        x_train = nn.functional.interpolate(x_train, size=shape[1:], mode="area")
    clf = train_classifier(x_train, y_train, steps=150, batch_size=128, seed=0)
    evaluator = FrechetEvaluator(clf, x_test)
    z = torch.randn((n_eval, *shape), generator=g)
    yz = torch.arange(n_eval) % model.config.num_classes
    cfg = TrainConfig(steps=steps, batch_size=min(32, n_pairs), lr=5e-4, ema_decay=0.0, seed=0)
    rows = []
    for name, x1, nfe in (("seed dopri5 1e-5", seed_x1, seed_nfe), (setting.name, res.x1, res.nfe)):
        batches = minibatches((x0, x1, y), cfg.batch_size, torch.Generator().manual_seed(0))
        model2 = fit(clone_model(model), batches, cfg).model
        sample = solve_ode(model2, z, yz, method="euler", steps=1).x1.clamp(-1, 1)
        fd, acc = evaluator.frechet(sample), evaluator.class_accuracy(sample, yz)
        rows.append(QualityRow(name, nfe, fd, acc, fd / rows[0].fd_1step if rows else 1.0))
        log(f"  2-RF on {name}: FD@1 = {fd:.3f}, class acc {acc:.3f}")
    body = "\n".join(
        [
            "## Reflow quality: 2-RF on default pairs vs seed-recipe pairs",
            "",
            f"Command: `{command}` · {time.strftime('%Y-%m-%d')} · "
            f"{machine_line()} · {time.perf_counter() - start:.0f} s",
            "",
            f"{n_pairs} pairs each (same noise and labels), 2-RF from the 1-RF weights, {steps} "
            f"steps × batch {cfg.batch_size}, same batch order; FD (classifier features) of "
            f"{n_eval} one-step Euler samples vs {len(x_test)} held-out digits. Target: vs_seed "
            "≤ 1.05.",
            "",
            markdown_table(rows),
        ]
    )
    print(body)
    if write:
        write_section("pairgen-quality", body)
    return rows
