"""The solver screen behind ``method: auto``: fields with a known answer, a trained toy model.

The trained model's claims are checked on held-out noise (draws the screen never saw) against
the reference solver at ``REFERENCE_TOL``: the chosen solver's pair error there is within the
tolerance, a tighter tolerance never picks fewer NFE, and two screens choose the same.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rf_core.config import ModelConfig, TrainConfig
from rf_core.data import sample_toy
from rf_core.models import build_model
from rf_core.pair_error import pair_error, reference_solve
from rf_core.screen_result import Screen
from rf_core.solver_screen import LEVELS, ToleranceUnreachable, candidate_ladder, screen_solvers
from rf_core.solver_spec import SolverSpec
from rf_core.solvers import solve_ode
from rf_core.training import fit

QUIET = {"log": lambda line: None}
FLAT = ModelConfig(kind="mlp", data_shape=(2,))


class Field(nn.Module):
    """A velocity field given by a formula ``v = f(x, t)`` (no weights)."""

    def __init__(self, f):
        super().__init__()
        self.f, self.config = f, FLAT

    def forward(self, x, t, y=None):
        return self.f(x, t)


def translation() -> Field:
    """v = c: every path is a straight line at constant speed, so one Euler step is exact."""
    c = torch.tensor([0.7, -1.3])
    return Field(lambda x, t: c.expand_as(x))


def oscillation(periods: float = 50.25) -> Field:
    """v = A w cos(w t): x(1) = x(0) + A sin(w); 50 periods alias every fixed grid here."""
    w = 2 * math.pi * periods
    return Field(lambda x, t: 0.5 * w * torch.cos(w * t)[:, None].expand_as(x))


def auto(**kw) -> SolverSpec:
    return SolverSpec(method="auto", **kw)


def noise(n: int, seed: int) -> torch.Tensor:
    return sample_toy("8gaussians", n, torch.Generator().manual_seed(seed))


def gaussian(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def toy() -> nn.Module:
    """1-RF on 8 Gaussians -> moons (an MLP; its field wiggles in t like a U-Net's)."""
    g = torch.Generator().manual_seed(0)
    unlabelled = torch.full((256,), -1)

    def batches(step):
        return sample_toy("8gaussians", 256, g), sample_toy("moons", 256, g), unlabelled

    torch.manual_seed(0)
    cfg = ModelConfig(kind="mlp", data_shape=(2,), hidden=64, depth=3)
    train = TrainConfig(steps=600, batch_size=256, lr=3e-3, ema_decay=0.99)
    return fit(build_model(cfg), batches, train).model.eval()


def test_the_ladder_goes_up_in_counted_nfe_to_a_few_hundred():
    ladder = candidate_ladder()
    assert [nfe for nfe, _ in ladder] == sorted(LEVELS) and LEVELS[-1] == 256
    x0 = gaussian(3)
    for nfe, group in ladder:
        assert group  # every level has a candidate
        for spec in group:
            assert not spec.adaptive
            assert solve_ode(translation(), x0, **spec.solve_kwargs()).nfe == nfe  # counted


def test_a_straight_field_picks_one_euler_step_and_stops_there():
    screen = screen_solvers(translation(), gaussian(16), None, auto(probe=16), **QUIET)
    assert screen.chosen == SolverSpec(method="euler", steps=1)
    assert not screen.fallback and screen.chosen_trial.error < 1e-5  # float32 rounding
    # Only the first group and the adaptive yardstick were solved.
    assert [t.solver.label() for t in screen.trials] == ["euler_1", "dopri5_tol0.002"]
    assert screen.evaluations == 16 * (screen.reference_nfe + 1 + screen.baseline.nfe)


def test_an_oscillating_field_falls_back_to_an_adaptive_solver_that_meets_the_tolerance():
    x0, tol = gaussian(16), 2e-3
    screen = screen_solvers(oscillation(), x0, None, auto(tolerance=tol, probe=16), **QUIET)
    fixed = [t for t in screen.trials if not t.solver.adaptive]
    assert len(fixed) == sum(len(g) for _, g in candidate_ladder())  # every rung tried
    assert all(t.bound > tol for t in fixed) and screen.fallback
    assert screen.chosen.method == "dopri5" and screen.chosen_trial.bound <= tol
    # Held-out noise: the choice holds there too.
    held = gaussian(64, seed=9)
    ref = reference_solve(oscillation(), held, None).x1
    got = solve_ode(oscillation(), held, **screen.chosen.solve_kwargs()).x1
    assert pair_error(got, ref) <= tol


def test_a_tolerance_nothing_reaches_is_an_error_naming_the_field():
    with pytest.raises(ToleranceUnreachable, match=r"solver\['tolerance'\] = 1e-09"):
        screen_solvers(oscillation(), gaussian(4), None, auto(tolerance=1e-9, probe=4))


@pytest.mark.parametrize(
    ("request_", "n", "match"),
    [
        (SolverSpec(method="rk4", steps=4), 8, "need an auto request"),
        (auto(probe=8), 7, "got auto_tol0.002_probe8 and 7 draws"),
    ],
)
def test_the_screen_takes_an_auto_request_and_its_draws(request_, n, match):
    with pytest.raises(ValueError, match=match):
        screen_solvers(translation(), gaussian(n), None, request_)


def _held_out_error(model: nn.Module, spec: SolverSpec) -> float:
    held = noise(256, seed=99)  # never the probe's draws
    ref = reference_solve(model, held, None).x1
    return pair_error(solve_ode(model, held, **spec.solve_kwargs()).x1, ref)


@pytest.mark.slow  # four screens and a held-out reference per tolerance (~30 s on 2 cores)
def test_on_a_trained_toy_the_choice_holds_on_held_out_noise_and_tracks_the_tolerance(toy):
    probe = noise(64, seed=1)
    picks = {}
    for tol in (1e-2, 3e-3, 1e-3):
        screen = screen_solvers(toy, probe, None, auto(tolerance=tol), **QUIET)
        picks[tol] = screen
        assert _held_out_error(toy, screen.chosen) <= tol, screen.table()
    nfes = [picks[t].chosen_trial.nfe for t in (1e-2, 3e-3, 1e-3)]
    assert nfes == sorted(nfes) and nfes[0] < nfes[-1]  # tighter: never fewer NFE
    # Deterministic: a second screen measures and chooses the same (timings aside).
    again = screen_solvers(toy, probe, None, auto(tolerance=3e-3), **QUIET)
    assert again.table() == picks[3e-3].table() and again.chosen == picks[3e-3].chosen


def test_a_record_reads_back_as_the_same_screen(toy):
    request = auto(tolerance=1e-2, probe=32, batch_size=128)
    screen = screen_solvers(toy, noise(32, seed=1), None, request, **QUIET)
    assert screen.chosen.batch_size == 128  # the request's execution fields carry over
    back = Screen.from_record(screen.record(), screen.chosen)
    assert back == screen and back.chosen_trial == screen.chosen_trial
    assert back.record() == screen.record()
    assert sum(row["chosen"] for row in back.table()) == 1


@pytest.mark.slow  # compiles a model (tens of seconds on 2 cores)
def test_a_compiled_request_screens_the_compiled_model(toy):
    request = auto(tolerance=1e-2, probe=32, compile=True)
    eager = screen_solvers(toy, noise(32, seed=1), None, auto(tolerance=1e-2, probe=32), **QUIET)
    compiled = screen_solvers(toy, noise(32, seed=1), None, request, **QUIET)
    assert compiled.compile_seconds > 0 and compiled.chosen.compile
    assert compiled.chosen.model_copy(update={"compile": False}) == eager.chosen
    for a, b in zip(compiled.trials, eager.trials, strict=True):  # rounding apart
        assert a.solver == b.solver
        if not a.solver.adaptive:  # (adaptive steps follow the rounding on this chaotic toy)
            assert a.nfe == b.nfe and a.error == pytest.approx(b.error, rel=1e-2, abs=1e-6)
