"""Classifier-free guidance: label dropout in fit, the guided field, its NFE, its refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rf_core.config import ModelConfig, TrainConfig
from rf_core.guidance import GuidedVelocity, check_guidance, drop_labels, label_dropout_of
from rf_core.models import build_model
from rf_core.solvers import NFECounter, solve_ode
from rf_core.training import fit, independent_batches, load_checkpoint, save_checkpoint

MLP = ModelConfig(kind="mlp", data_shape=(2,), num_classes=3, hidden=16, depth=2)


class Recorder(nn.Module):
    """A velocity model that remembers the labels and times of every training call."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.ys, self.ts = model, [], []

    @property
    def config(self):
        return self.model.config

    def forward(self, x, t, y=None):
        self.ys.append(y.clone())
        self.ts.append(t.clone())
        return self.model(x, t, y)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(MLP)


def _batches():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (256,), generator=g)
    x1 = torch.randn(256, 2, generator=g) + torch.stack([y.float(), -y.float()], dim=1)
    return independent_batches(x1, y, 64, g)


def _fit(p: float) -> Recorder:
    rec = Recorder(_model())
    cfg = TrainConfig(steps=40, batch_size=64, ema_decay=0.0, log_every=10, label_dropout=p)
    fit(rec, _batches(), cfg)
    return rec


def test_label_dropout_trains_the_null_label_and_leaves_every_other_stream_alone():
    plain, dropped = _fit(0.0), _fit(0.3)
    seen = torch.cat(dropped.ys)
    assert 0.2 < float((seen == -1).float().mean()) < 0.4
    assert not (torch.cat(plain.ys) == -1).any()
    # The same batches and times in both runs: dropout draws from its own generator.
    for a, b in zip(plain.ys, dropped.ys, strict=True):
        keep = b >= 0
        assert torch.equal(a[keep], b[keep])
    assert all(torch.equal(a, b) for a, b in zip(plain.ts, dropped.ts, strict=True))


def test_drop_labels_depends_on_seed_and_step_only():
    y = torch.arange(1000) % 10
    a = drop_labels(y, 0.1, seed=3, step=7)
    assert torch.equal(a, drop_labels(y, 0.1, seed=3, step=7))
    assert not torch.equal(a, drop_labels(y, 0.1, seed=3, step=8))
    assert not torch.equal(a, drop_labels(y, 0.1, seed=4, step=7))
    assert torch.equal(a[a >= 0], y[a >= 0]) and 50 < int((a == -1).sum()) < 150
    assert torch.equal(drop_labels(y, 0.0, 3, 7), y)


def test_a_checkpoint_remembers_its_label_dropout(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=1, label_dropout=0.15)
    save_checkpoint(tmp_path / "a.pt", _model(), cfg)
    save_checkpoint(tmp_path / "b.pt", _model())  # no train config: trained elsewhere
    assert label_dropout_of(load_checkpoint(tmp_path / "a.pt")[1]) == 0.15
    assert label_dropout_of(load_checkpoint(tmp_path / "b.pt")[1]) == 0.0
    # A checkpoint of a train config from before the setting existed reads as 0.
    assert label_dropout_of({"train_config": {"steps": 1, "batch_size": 1}}) == 0.0


def test_guided_field_is_the_cfg_mix_and_zero_is_the_model_itself():
    model = _model().eval()
    x, t, y = torch.randn(5, 2), torch.rand(5), torch.tensor([0, 1, 2, 0, -1])
    counter = NFECounter(model)
    with torch.no_grad():
        assert torch.equal(GuidedVelocity(counter, 0.0)(x, t, y), model(x, t, y))
        assert counter.nfe == 1
        guided = GuidedVelocity(counter, 2.0)(x, t, y)
        assert counter.nfe == 3  # both evaluations counted
        null = model(x, t, torch.full((5,), -1))
        torch.testing.assert_close(guided, 3 * model(x, t, y) - 2 * null)
    assert not torch.allclose(guided[:4], model(x, t, y)[:4])
    torch.testing.assert_close(guided[4], null[4])  # an unconditional row is left as it is


@pytest.mark.parametrize(("method", "kw"), [("euler", {"steps": 4}), ("rk4", {"steps": 3})])
def test_solve_ode_counts_both_evaluations_of_a_guided_step(method, kw):
    model, x0, y = _model(), torch.randn(8, 2), torch.arange(8) % 3
    plain = solve_ode(model, x0, y, method=method, **kw)
    zero = solve_ode(model, x0, y, method=method, guidance=0.0, **kw)
    guided = solve_ode(model, x0, y, method=method, guidance=1.5, **kw)
    assert torch.equal(zero.x1, plain.x1) and zero.nfe == plain.nfe
    assert guided.nfe == 2 * plain.nfe
    assert not torch.allclose(guided.x1, plain.x1)
    adaptive = solve_ode(model, x0, y, method="dopri5", rtol=1e-3, atol=1e-3, guidance=1.5)
    assert adaptive.nfe % 2 == 0 and adaptive.nfe >= 2 * 6
    with pytest.raises(ValueError, match="guidance must be a finite number >= 0"):
        solve_ode(model, x0, y, method=method, guidance=-1.0, **kw)


@pytest.mark.parametrize(
    ("classes", "dropout", "labels", "w", "says"),
    [
        (3, 0.0, [0, 1], 2.0, "guidance 2 needs a model trained with label dropout; m-x was"),
        (3, 0.0, [0, -1], 0.0, r"label -1 \(unconditional\) needs a model trained with label drop"),
        (0, 0.0, [-1], 1.0, r"m-x is unconditional \(num_classes 0\)"),
        (3, 0.1, [0, 3], 0.0, r"labels in \[0, 3\]; allowed: -1\.\.2"),
        (3, 0.1, [0], float("nan"), "guidance must be a finite number"),
        (0, 0.0, [0], 0.0, "allowed: only -1"),
    ],
)
def test_check_guidance_refuses_by_name(classes, dropout, labels, w, says):
    with pytest.raises(ValueError, match=says):
        check_guidance(classes, dropout, torch.tensor(labels), w, "m-x")


def test_check_guidance_allows_what_the_model_was_trained_for():
    check_guidance(3, 0.1, torch.tensor([-1, 0, 2]), 4.0, "m-x")  # dropout: anything
    check_guidance(3, 0.0, torch.tensor([0, 2]), 0.0, "m-x")  # no dropout: plain labels
    check_guidance(0, 0.0, torch.tensor([-1, -1]), 0.0, "m-x")  # unconditional model


def test_label_dropout_of_two_processes_is_that_of_one_on_the_global_batch():
    y = torch.arange(64) % 10
    one = drop_labels(y, 0.3, seed=5, step=7)
    halves = [drop_labels(y[r * 32 : (r + 1) * 32], 0.3, 5, 7, rank=r, world=2) for r in (0, 1)]
    assert torch.equal(torch.cat(halves), one)
    assert (one == -1).any() and (one != -1).any()
