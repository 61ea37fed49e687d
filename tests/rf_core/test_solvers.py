"""solve_ode against fields with known solutions, NFE counting, batching and argument checks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from rf_core.config import ModelConfig
from rf_core.solvers import ADAPTIVE_METHODS, METHODS, NFECounter, solve_ode


class Field(nn.Module):
    """A 'model' with an analytic velocity ``fn(x, t, y)`` and a real ModelConfig."""

    def __init__(self, fn, dim: int = 3, num_classes: int = 0):
        super().__init__()
        self.config = ModelConfig(kind="mlp", data_shape=(dim,), num_classes=num_classes)
        self.fn = fn

    def forward(self, x, t, y=None):
        assert t.shape == (x.shape[0],)  # solvers must hand the model a (B,) time
        return self.fn(x, t, y)


def quadratic_in_t(x, t, y):
    return 3 * t[:, None] ** 2 * torch.ones_like(x)


def x0_batch(n: int = 20, dim: int = 3, seed: int = 0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def accuracy_settings(method: str) -> dict:
    if method in ADAPTIVE_METHODS:
        return {"rtol": 1e-6, "atol": 1e-6}
    return {"steps": 2000 if method == "euler" else 256}


@pytest.mark.parametrize("method", METHODS)
def test_v_3t2_moves_every_point_by_one(method):
    x0 = x0_batch()
    res = solve_ode(Field(quadratic_in_t), x0, method=method, **accuracy_settings(method))
    tol = 1e-3 if method == "euler" else 1e-4
    torch.testing.assert_close(res.x1, x0 + 1, atol=tol, rtol=0)
    assert res.nfe > 0 and res.nfe_total == res.nfe


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "heun3", "dopri5", "dopri8"])
def test_linear_field_matches_exponential(method):
    a = -0.7
    x0 = x0_batch().double()  # float64: compare the method's error, not float32 round-off
    res = solve_ode(Field(lambda x, t, y: a * x), x0, method=method, **accuracy_settings(method))
    tol = 2e-4 if method == "euler" else 2e-5
    torch.testing.assert_close(res.x1, x0 * math.exp(a), atol=tol, rtol=tol)


@pytest.mark.parametrize(
    ("method", "steps", "nfe"),
    [("rk4", 8, 32), ("euler", 4, 4), ("midpoint", 5, 10), ("heun3", 2, 6)],
)
def test_fixed_step_nfe_is_exact(method, steps, nfe):
    res = solve_ode(Field(quadratic_in_t), x0_batch(), method=method, steps=steps)
    assert res.nfe == nfe


def test_euler_on_explicit_time_grid_is_the_left_riemann_sum():
    grid = [0.0, 0.5, 0.9, 1.0]
    x0 = x0_batch()
    res = solve_ode(Field(quadratic_in_t), x0, method="euler", t_grid=grid, return_trajectory=True)
    expected = sum(3 * t**2 * (t_next - t) for t, t_next in itertools.pairwise(grid))
    torch.testing.assert_close(res.x1, x0 + expected)
    assert res.nfe == 3
    assert res.trajectory.shape == (4, 20, 3)
    torch.testing.assert_close(res.t, torch.tensor(grid))


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_batching_matches_unbatched_fixed_step(method):
    model = Field(lambda x, t, y: torch.sin(3 * x) * (1 + t[:, None]) + y[:, None])
    model.config = ModelConfig(kind="mlp", data_shape=(3,), num_classes=5)
    x0, y = x0_batch(23), torch.arange(23) % 5
    whole = solve_ode(model, x0, y, method=method, steps=6)
    parts = solve_ode(model, x0, y, method=method, steps=6, batch_size=5)
    torch.testing.assert_close(parts.x1, whole.x1, atol=1e-6, rtol=0)
    assert parts.nfe == whole.nfe
    assert parts.nfe_total == 5 * whole.nfe  # ceil(23 / 5) batches


def test_batching_adaptive_agrees_within_tolerance_and_sums_nfe():
    model = Field(lambda x, t, y: torch.sin(3 * x) * (1 + t[:, None]))
    x0 = x0_batch(30)
    whole = solve_ode(model, x0, rtol=1e-6, atol=1e-6)
    parts = solve_ode(model, x0, rtol=1e-6, atol=1e-6, batch_size=10)
    torch.testing.assert_close(parts.x1, whole.x1, atol=1e-4, rtol=0)
    assert parts.nfe_total >= parts.nfe > 0
    assert parts.nfe_total > whole.nfe  # three separate adaptive solves


def test_labels_reach_the_model():
    model = Field(lambda x, t, y: y[:, None].float().expand_as(x))
    model.config = ModelConfig(kind="mlp", data_shape=(3,), num_classes=4)
    x0, y = x0_batch(8), torch.tensor([0, 1, 2, 3, -1, 0, 1, 2])
    res = solve_ode(model, x0, y, method="euler", steps=3, batch_size=3)
    torch.testing.assert_close(res.x1, x0 + y[:, None].float())


def test_trajectory_endpoints_and_adaptive_output_times_cost_nothing():
    model, x0 = Field(quadratic_in_t), x0_batch()
    plain = solve_ode(model, x0)
    traj = solve_ode(model, x0, return_trajectory=True, traj_points=6)
    assert traj.trajectory.shape == (6, 20, 3) and plain.trajectory is None
    torch.testing.assert_close(traj.trajectory[0], x0)
    torch.testing.assert_close(traj.trajectory[-1], traj.x1)
    torch.testing.assert_close(traj.trajectory[3], x0 + 0.6**3, atol=1e-4, rtol=0)


def test_runs_in_inference_mode_eval_and_restores_training_mode():
    seen = {}

    def fn(x, t, y):
        seen["inference"] = torch.is_inference_mode_enabled()
        return -x

    model = Field(fn).train()
    solve_ode(model, x0_batch(), method="euler", steps=1)
    assert seen["inference"] and model.training
    model.eval()
    solve_ode(model, x0_batch(), method="euler", steps=1)
    assert not model.training


def test_deterministic_on_a_real_network():
    from rf_core.models import build_model

    torch.manual_seed(0)
    net = build_model(ModelConfig(kind="mlp", data_shape=(2,), hidden=16, depth=2))
    x0 = x0_batch(50, 2)
    for kwargs in ({"method": "rk4", "steps": 4}, {"rtol": 1e-3, "atol": 1e-3}):
        a, b = solve_ode(net, x0, **kwargs), solve_ode(net, x0, **kwargs)
        assert torch.equal(a.x1, b.x1) and a.nfe == b.nfe


def test_nfe_counter_counts_and_passes_through():
    model = Field(lambda x, t, y: 2 * x)
    counter = NFECounter(model)
    x, t = x0_batch(4), torch.zeros(4)
    for _ in range(3):
        out = counter(x, t, None)
    assert counter.nfe == 3 and torch.equal(out, 2 * x) and counter.config is model.config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "rk5"}, "allowed: euler"),
        ({"method": "euler"}, "needs steps"),
        ({"method": "euler", "steps": 0}, "needs steps"),
        ({"method": "rk4", "steps": -3}, "needs steps"),
        ({"method": "rk4", "steps": 2.5}, "needs steps"),
        ({"method": "dopri5", "steps": 4}, "adaptive"),
        ({"method": "dopri5", "rtol": 0.0}, "rtol"),
        ({"method": "euler", "t_grid": [0.0, 0.6, 0.4, 1.0]}, "strictly increasing"),
        ({"method": "euler", "t_grid": [0.1, 0.5, 1.0]}, "start at t0"),
        ({"method": "euler", "t_grid": [0.0, 0.5, 1.0], "steps": 3}, "disagrees"),
        ({"method": "euler", "steps": 2, "batch_size": 0}, "batch_size"),
        ({"method": "euler", "steps": 2, "t0": 0.5, "t1": 0.5}, "t0 < t1"),
        ({"method": "euler", "steps": 2, "t1": 1.5}, "t1 <= 1"),
    ],
)
def test_bad_solver_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        solve_ode(Field(quadratic_in_t), x0_batch(), **kwargs)


def test_bad_inputs_are_named():
    model = Field(quadratic_in_t)  # unconditional, data_shape (3,)
    with pytest.raises(ValueError, match=r"x has shape \(5, 2\); expected \(B, 3\)"):
        solve_ode(model, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="only -1"):
        solve_ode(model, torch.zeros(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"y has shape"):
        solve_ode(model, torch.zeros(5, 3), torch.full((4,), -1))
    with pytest.raises(ValueError, match="at least one sample"):
        solve_ode(model, torch.zeros(0, 3))
    conditional = Field(quadratic_in_t, num_classes=10)
    with pytest.raises(ValueError, match=r"allowed: -1\.\.9"):
        solve_ode(conditional, torch.zeros(2, 3), torch.tensor([3, 10]))
    with pytest.raises(ValueError, match=r"allowed: -1\.\.9"):
        solve_ode(conditional, torch.zeros(2, 3), torch.tensor([-2, 0]))
