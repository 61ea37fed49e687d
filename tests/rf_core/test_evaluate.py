"""NFE sweeps: paired inputs, measured NFE, determinism, scoring of toys and images, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rf_core.classifier import DigitClassifier
from rf_core.config import ModelConfig
from rf_core.evaluate import (
    EvalRow,
    ToyScorer,
    make_scorer,
    nfe_sweep,
    rows_to_markdown,
    sweep_inputs,
)
from rf_core.frechet import FrechetEvaluator
from rf_core.models import build_model

TOY = ModelConfig(kind="mlp", data_shape=(2,), num_classes=3, hidden=32, depth=2)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(TOY)


class Recorder(nn.Module):
    """Passes calls through and records the (x, y) of every call made at t = 0."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.config, self.seen = model, model.config, []

    def forward(self, x, t, y):
        if bool((t == 0).all()):
            self.seen.append((x.clone(), y.clone()))
        return self.model(x, t, y)


class ConstantVelocity(nn.Module):
    """v(x, t, y) = c: every trajectory is a straight line."""

    def __init__(self):
        super().__init__()
        self.config = TOY
        self.c = nn.Parameter(torch.tensor([1.5, -0.5]))

    def forward(self, x, t, y):
        return self.c.expand_as(x)


@pytest.fixture(scope="module")
def toy():
    torch.set_num_threads(1)
    x0, y = sweep_inputs((2,), 256, num_classes=3, seed=0)
    return x0, y, make_scorer("toy", toy_name="moons", n_target=512, seed=0)


def test_rows_report_measured_nfe(toy):
    x0, y, scorer = toy
    rows, samples = nfe_sweep({"a": _mlp(0), "b": _mlp(1)}, x0, y, scorer)
    assert [(r.model, r.solver, r.steps) for r in rows[:5]] == [
        ("a", "euler", 1),
        ("a", "euler", 2),
        ("a", "euler", 4),
        ("a", "euler", 8),
        ("a", "dopri5", None),
    ]
    assert len(rows) == 10 and set(samples) == {(r.model, r.solver, r.steps) for r in rows}
    for r in rows:
        assert r.nfe == r.steps if r.solver == "euler" else r.nfe > 8
        assert r.fd is None and r.class_acc is None
        assert r.swd > 0 and r.mmd >= 0
        assert samples[(r.model, r.solver, r.steps)].shape == x0.shape
    # Straightness is a property of the model: one value per model, positive for a curved field.
    assert len({r.straightness for r in rows if r.model == "a"}) == 1
    assert rows[0].straightness > 0 and rows[0].straightness != rows[5].straightness


def test_guided_sweep_counts_both_evaluations_and_zero_is_the_plain_sweep(toy):
    x0, y, scorer = toy
    kw = {"steps": (1, 2), "adaptive": False}
    plain, samples = nfe_sweep({"a": _mlp(0)}, x0, y, scorer, **kw)
    zero, zero_samples = nfe_sweep({"a": _mlp(0)}, x0, y, scorer, guidance=0.0, **kw)
    guided, guided_samples = nfe_sweep({"a": _mlp(0)}, x0, y, scorer, guidance=2.0, **kw)
    assert zero == plain and all(r.guidance == 0 for r in plain)
    assert all(torch.equal(zero_samples[k], samples[k]) for k in samples)
    assert [(r.steps, r.nfe, r.guidance) for r in guided] == [(1, 2, 2.0), (2, 4, 2.0)]
    assert guided[0].swd != plain[0].swd and guided[0].straightness != plain[0].straightness
    assert not torch.allclose(guided_samples[("a", "euler", 1)], samples[("a", "euler", 1)])
    assert "| guidance |" in rows_to_markdown(plain + guided)
    assert "guidance" not in rows_to_markdown(plain)


def test_same_seed_gives_identical_numbers(toy):
    x0, y, scorer = toy
    rows1, s1 = nfe_sweep({"a": _mlp(0)}, x0, y, scorer)
    x0b, yb = sweep_inputs((2,), 256, num_classes=3, seed=0)
    scorer_b = make_scorer("toy", toy_name="moons", n_target=512, seed=0)
    rows2, s2 = nfe_sweep({"a": _mlp(0)}, x0b, yb, scorer_b)
    assert rows1 == rows2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_models_see_identical_noise_and_labels(toy):
    x0, y, scorer = toy
    models = {"a": Recorder(_mlp(0)), "b": Recorder(_mlp(1))}
    nfe_sweep(models, x0, y, scorer, steps=(1, 2))
    for m in models.values():
        assert len(m.seen) >= 3  # one t = 0 call per solve (+ dopri5's initial step probe)
        for x, yy in m.seen:
            assert torch.equal(x, x0) and torch.equal(yy, y)


def test_straight_field_has_zero_straightness_and_exact_one_step(toy):
    x0, y, scorer = toy
    rows, samples = nfe_sweep({"line": ConstantVelocity()}, x0, y, scorer)
    assert all(r.straightness < 1e-10 for r in rows)
    torch.testing.assert_close(samples[("line", "euler", 1)], samples[("line", "dopri5", None)])
    torch.testing.assert_close(samples[("line", "euler", 1)], x0 + torch.tensor([1.5, -0.5]))


def test_without_adaptive_uses_finest_euler(toy):
    x0, y, scorer = toy
    rows, samples = nfe_sweep({"a": _mlp(0)}, x0, y, scorer, steps=(2, 1), adaptive=False)
    assert [r.steps for r in rows] == [2, 1] and {r.solver for r in rows} == {"euler"}
    assert set(samples) == {("a", "euler", 2), ("a", "euler", 1)}


def test_image_sweep_scores_fd_and_class_accuracy():
    torch.manual_seed(0)
    cfg = ModelConfig(
        kind="unet", data_shape=(1, 8, 8), num_classes=2, base_channels=8, channel_mult=(1,)
    )
    model = build_model(cfg)
    clf = DigitClassifier((1, 8, 8), num_classes=2, feature_dim=16)
    real = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    scorer = make_scorer("image", evaluator=FrechetEvaluator(clf, real))
    x0, y = sweep_inputs((1, 8, 8), 16, num_classes=2, seed=0)
    # Samples of an untrained net leave [-1, 1]: the scorer clamps them like saved images.
    rows, samples = nfe_sweep({"m": model}, x0, y, scorer, steps=(1, 2), adaptive=False)
    assert samples[("m", "euler", 1)].abs().max() > 1
    for r in rows:
        assert r.fd > 0 and 0 <= r.class_acc <= 1 and r.swd is None and r.mmd is None
    x0u, yu = sweep_inputs((1, 8, 8), 16, num_classes=0, seed=0)
    assert bool((yu == -1).all())
    rows_u, _ = nfe_sweep({"m": model}, x0u, yu, scorer, steps=(1,), adaptive=False)
    assert rows_u[0].class_acc is None and rows_u[0].fd > 0  # unconditional: no label to agree


def test_sweep_inputs_are_seeded_and_balanced():
    x0, y = sweep_inputs((1, 4, 4), 20, num_classes=10, seed=3)
    x0b, _ = sweep_inputs((1, 4, 4), 20, num_classes=10, seed=3)
    assert x0.shape == (20, 1, 4, 4) and torch.equal(x0, x0b)
    assert torch.equal(torch.bincount(y), torch.full((10,), 2))
    with pytest.raises(ValueError, match="n must be"):
        sweep_inputs((2,), 1, num_classes=0, seed=0)


def test_rows_to_markdown_drops_empty_metric_columns():
    rows = [
        EvalRow("1-rf", "euler", 1, 1, None, None, 0.5, 0.1, 0.01),
        EvalRow("1-rf", "dopri5", None, 26, None, None, 0.25, 0.1, 0.005),
    ]
    md = rows_to_markdown(rows).splitlines()
    assert md[0] == "| model | solver | steps | nfe | swd | mmd | straightness |"
    assert len(md) == 4 and md[3].startswith("| 1-rf | dopri5 | – | 26 | 0.25 |")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"models": {}}, "models must be a non-empty dict"),
        ({"models": {"a": nn.Linear(2, 2)}}, r"models\['a'\]"),
        ({"fixed_method": "rk45"}, "fixed_method='rk45' is unknown"),
        ({"adaptive_method": "euler"}, "adaptive_method='euler' is unknown"),
        ({"steps": (0, 1)}, "steps must be positive ints"),
        ({"steps": (), "adaptive": False}, "nothing to evaluate"),
        ({"y": torch.zeros(8, dtype=torch.int32)}, "y must be int64"),
        ({"x0": torch.zeros(8, 3)}, r"x has shape \(8, 3\)"),
        ({"x0": torch.zeros(1, 2), "y": torch.zeros(1, dtype=torch.long)}, "N >= 2"),
    ],
)
def test_sweep_rejects_bad_arguments(kwargs, match):
    args = {
        "models": {"a": _mlp(0)},
        "x0": torch.zeros(8, 2),
        "y": torch.zeros(8, dtype=torch.long),
        "scorer": ToyScorer(torch.randn(16, 2)),
    }
    with pytest.raises(ValueError, match=match):
        nfe_sweep(**{**args, **kwargs})


def test_make_scorer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dataset_kind='audio' is unknown"):
        make_scorer("audio")
    with pytest.raises(ValueError, match="needs evaluator"):
        make_scorer("image")
    with pytest.raises(ValueError, match="needs target"):
        make_scorer("toy")
    with pytest.raises(ValueError, match="toy name='spiral'"):
        make_scorer("toy", toy_name="spiral")
    with pytest.raises(ValueError, match="target must be"):
        ToyScorer(torch.randn(16))
    with pytest.raises(ValueError, match=r"samples must be \(N, 2\)"):
        ToyScorer(torch.randn(16, 2))(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
