"""End-to-end reflow on a 2-D toy: 2-RF must be straighter and better at one Euler step than 1-RF.

8 Gaussians -> moons with an MLP: 1-RF on independent pairs, then dopri5 pairs (x0, ODE_1(x0)),
then 2-RF initialised from 1-RF on those pairs. ~12 s on an idle CPU thread, ~30 s on a loaded box.
"""

from __future__ import annotations

import copy

import pytest
import torch

from rf_core.config import ModelConfig, TrainConfig
from rf_core.data import sample_toy
from rf_core.metrics import mmd_rbf, sliced_wasserstein, straightness
from rf_core.models import build_model
from rf_core.solvers import solve_ode
from rf_core.training import fit, minibatches

BATCH = 256
SRC, TGT = "8gaussians", "moons"


@pytest.fixture(scope="module")
def models():
    g = torch.Generator().manual_seed(0)
    unlabelled = torch.full((BATCH,), -1)

    def independent(step):
        return sample_toy(SRC, BATCH, g), sample_toy(TGT, BATCH, g), unlabelled

    torch.manual_seed(0)
    cfg = ModelConfig(kind="mlp", data_shape=(2,), hidden=64, depth=3)
    one = TrainConfig(steps=1000, batch_size=BATCH, lr=3e-3, ema_decay=0.99)
    rf1 = fit(build_model(cfg), independent, one).model

    x0 = sample_toy(SRC, 2048, g)
    pairs = solve_ode(rf1, x0, method="dopri5", rtol=1e-4, atol=1e-4)
    reflow = minibatches((x0, pairs.x1, torch.full((2048,), -1)), BATCH, g)
    two = TrainConfig(steps=500, batch_size=BATCH, lr=1e-3, ema_decay=0.99, seed=1)
    rf2 = fit(copy.deepcopy(rf1).train(), reflow, two).model
    return rf1, rf2


def evaluate(model, x0, target):
    """Straightness on the model's own ODE pairs and the quality of its 1-step Euler samples."""
    end = solve_ode(model, x0, method="dopri5", rtol=1e-4, atol=1e-4).x1
    one_step = solve_ode(model, x0, method="euler", steps=1).x1
    return {
        "S": straightness(model, x0, end),
        "swd": sliced_wasserstein(one_step, target, 256, torch.Generator().manual_seed(7)),
        "mmd": mmd_rbf(one_step, target),
        "ode_swd": sliced_wasserstein(end, target, 256, torch.Generator().manual_seed(7)),
    }


@pytest.mark.slow
def test_reflow_straightens_and_improves_one_step_samples(models):
    rf1, rf2 = models
    g = torch.Generator().manual_seed(123)  # fresh draws, unseen in training
    x0, target = sample_toy(SRC, 1500, g), sample_toy(TGT, 1500, g)
    m1, m2 = evaluate(rf1, x0, target), evaluate(rf2, x0, target)
    assert m2["S"] <= 0.5 * m1["S"], (m1, m2)
    assert m2["swd"] < m1["swd"] and m2["mmd"] < m1["mmd"], (m1, m2)
    # Both flows still reach the target when solved accurately (the 1-RF is not just bad).
    assert m1["ode_swd"] < 0.5 * m1["swd"] and m2["ode_swd"] < 0.5 * m1["swd"], (m1, m2)
