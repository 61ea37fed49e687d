"""1-step distillation on a 2-D toy: the objective, and that it beats its teacher at one step."""

from __future__ import annotations

import pytest
import torch

from rf_core.config import ModelConfig, TrainConfig
from rf_core.data import sample_toy
from rf_core.distill import distill, distill_loss
from rf_core.metrics import sliced_wasserstein
from rf_core.models import build_model
from rf_core.solvers import solve_ode
from rf_core.training import fit, independent_batches

CFG = ModelConfig(kind="mlp", data_shape=(2,), hidden=64, depth=2)


@pytest.fixture(scope="module")
def teacher_and_pairs():
    """A quickly trained 1-RF on two moons and its reflow pairs (x0, ODE(x0))."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = sample_toy("moons", 4096, g)
    y = torch.full((len(data),), -1)
    cfg = TrainConfig(steps=600, batch_size=256, lr=3e-3, ema_decay=0.0, seed=0)
    teacher = fit(build_model(CFG), independent_batches(data, y, 256, g), cfg).model
    x0 = torch.randn(2048, 2, generator=g)
    x1 = solve_ode(teacher, x0, y[:2048], method="euler", steps=32).x1
    return teacher, x0, x1, y[:2048]


def _one_step_swd(model, seed: int = 1) -> float:
    g = torch.Generator().manual_seed(seed)
    x0, target = torch.randn(2048, 2, generator=g), sample_toy("moons", 2048, g)
    x1 = solve_ode(model, x0, None, method="euler", steps=1).x1
    return sliced_wasserstein(x1, target, 256, torch.Generator().manual_seed(0))


def test_distill_loss_is_the_one_step_error():
    torch.manual_seed(0)
    model = build_model(CFG)
    x0, x1 = torch.randn(8, 2), torch.randn(8, 2)
    y = torch.full((8,), -1)
    v = model(x0, torch.zeros(8), y)
    expected = (x0 + v - x1).square().mean()
    torch.testing.assert_close(distill_loss(model, x0, x1, y), expected)
    huber = distill_loss(model, x0, x1, None, kind="pseudo_huber")
    assert huber.item() > 0 and torch.isfinite(huber)
    with pytest.raises(ValueError, match="x1 has shape"):
        distill_loss(model, x0, x1[:, :1], y)
    with pytest.raises(ValueError, match="kind='l1' is unknown"):
        distill_loss(model, x0, x1, y, kind="l1")


def test_distillation_improves_one_step_quality(teacher_and_pairs):
    teacher, x0, x1, y = teacher_and_pairs
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    g = torch.Generator().manual_seed(1)

    def batches(step: int):
        idx = torch.randint(0, len(x0), (256,), generator=g)
        return x0[idx], x1[idx], y[idx]

    logged = []
    cfg = TrainConfig(steps=400, batch_size=256, lr=1e-3, ema_decay=0.0, seed=0, log_every=100)
    res = distill(teacher, batches, cfg, callback=lambda s, loss: logged.append((s, loss)))
    swd_teacher, swd_student = _one_step_swd(teacher), _one_step_swd(res.model)
    assert swd_student < 0.6 * swd_teacher, (swd_teacher, swd_student)
    assert [s for s, _ in logged] == [100, 200, 300, 400] and logged[-1][1] < logged[0][1]
    assert res.steps == 400 and len(res.losses) == 400
    # The teacher is the initialisation, not the thing trained.
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_distill_with_ema_and_iterable_epochs(teacher_and_pairs):
    teacher, x0, x1, y = teacher_and_pairs
    epoch = [(x0[i : i + 512], x1[i : i + 512], y[i : i + 512]) for i in range(0, 2048, 512)]
    cfg = TrainConfig(steps=6, batch_size=512, ema_decay=0.5, seed=0)
    res = distill(teacher, epoch, cfg)  # a list restarts: 6 steps over 4 batches
    assert res.steps == 6 and res.raw_model is not res.model and not res.model.training


def test_distill_rejects_exhausted_iterator_and_nan(teacher_and_pairs):
    teacher, x0, x1, y = teacher_and_pairs
    one_shot = iter([(x0[:8], x1[:8], y[:8])])
    with pytest.raises(ValueError, match="batches ran out after 1 steps"):
        distill(teacher, one_shot, TrainConfig(steps=2, batch_size=8))
    bad = (x0[:8], torch.full_like(x1[:8], float("nan")), y[:8])
    with pytest.raises(FloatingPointError, match="training loss is nan"):
        distill(teacher, lambda step: bad, TrainConfig(steps=1, batch_size=8, grad_clip=None))
