"""Paths, time samplers, losses and metrics against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from rf_core.config import ModelConfig
from rf_core.losses import pseudo_huber_c, rf_loss
from rf_core.metrics import endpoint_error, mmd_rbf, sliced_wasserstein, straightness
from rf_core.paths import interpolate, target_velocity
from rf_core.timesteps import sample_t


class Const(torch.nn.Module):
    """v(x, t) = c (the same vector everywhere)."""

    def __init__(self, c, num_classes: int = 0):
        super().__init__()
        self.c = torch.as_tensor(c, dtype=torch.float32)
        self.config = ModelConfig(
            kind="mlp", data_shape=tuple(self.c.shape), num_classes=num_classes
        )

    def forward(self, x, t, y=None):
        return self.c.expand_as(x)


def test_interpolate_endpoints_and_midpoint():
    x0, x1 = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    torch.testing.assert_close(interpolate(x0, x1, torch.zeros(3)), x0)
    torch.testing.assert_close(interpolate(x0, x1, torch.ones(3)), x1)
    xt = interpolate(x0, x1, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(xt[1], (x0[1] + x1[1]) / 2)
    torch.testing.assert_close(target_velocity(x0, x1), x1 - x0)


@pytest.mark.parametrize("kind", ["uniform", "logit_normal", "u_shaped"])
def test_time_samplers_are_in_range_and_seeded(kind):
    a = sample_t(20_000, kind, torch.Generator().manual_seed(0))
    b = sample_t(20_000, kind, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (20_000,) and a.min() >= 0 and a.max() <= 1
    assert abs(a.mean().item() - 0.5) < 0.02  # all three are symmetric about 1/2


def test_time_sampler_shapes_match_their_densities():
    g = torch.Generator().manual_seed(0)
    middle = {
        k: ((sample_t(50_000, k, g) - 0.5).abs() < 0.1).float().mean().item()
        for k in ("uniform", "logit_normal", "u_shaped")
    }
    assert middle["uniform"] == pytest.approx(0.2, abs=0.01)
    assert middle["logit_normal"] > 0.3  # mass near 1/2
    # u_shaped: density cosh(4(2t-1)); mass of |t - 1/2| < 0.1 is sinh(0.8) / sinh(4).
    assert middle["u_shaped"] == pytest.approx(math.sinh(0.8) / math.sinh(4.0), abs=0.01)
    with pytest.raises(ValueError, match="allowed: uniform, logit_normal, u_shaped, zero"):
        sample_t(3, "beta")


def test_zero_sampler_is_the_distillation_time():
    t = sample_t(5, "zero", torch.Generator().manual_seed(0))
    assert t.shape == (5,) and t.dtype == torch.float32 and bool((t == 0).all())


def test_mse_loss_of_a_constant_field_is_closed_form():
    x0, x1 = torch.zeros(4, 2), torch.tensor([[1.0, 2.0]] * 4)
    loss = rf_loss(Const([1.0, 0.0]), x0, x1, None, torch.rand(4))
    assert loss.item() == pytest.approx((0 + 4) / 2)
    assert rf_loss(Const([1.0, 2.0]), x0, x1, None, torch.rand(4)).item() == 0.0


def test_pseudo_huber_loss_matches_rf_plus_plus():
    x0, x1 = torch.zeros(4, 2), torch.tensor([[1.0, 2.0]] * 4)
    c = pseudo_huber_c(2)
    assert c == pytest.approx(0.00054 * math.sqrt(2))
    loss = rf_loss(Const([1.0, 0.0]), x0, x1, None, torch.rand(4), kind="pseudo_huber")
    assert loss.item() == pytest.approx(math.sqrt(4 + c * c) - c, rel=1e-6)


def test_loss_checks_its_arguments():
    model, x = Const([0.0, 0.0]), torch.zeros(4, 2)
    with pytest.raises(ValueError, match="allowed: mse, pseudo_huber"):
        rf_loss(model, x, x, None, torch.rand(4), kind="l1")
    with pytest.raises(ValueError, match="x1 has shape"):
        rf_loss(model, x, torch.zeros(4, 3), None, torch.rand(4))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        rf_loss(model, x, x, None, torch.full((4,), 2.0))
    with pytest.raises(ValueError, match="only -1"):
        rf_loss(model, x, x, torch.zeros(4, dtype=torch.long), torch.rand(4))


def test_straightness_is_zero_for_the_exact_field_and_closed_form_otherwise():
    x0 = torch.zeros(10, 2)
    x1 = torch.tensor([[1.0, 2.0]] * 10)
    assert straightness(Const([1.0, 2.0]), x0, x1) == pytest.approx(0.0)
    assert straightness(Const([0.0, 0.0]), x0, x1, n_t=4, batch_size=3) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="n_t"):
        straightness(Const([0.0, 0.0]), x0, x1, n_t=0)


def test_sliced_wasserstein_of_a_shift_is_the_projected_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 3, generator=g)
    assert sliced_wasserstein(a, a, 64, torch.Generator().manual_seed(1)) == 0.0
    shift = torch.tensor([3.0, 0.0, 0.0])
    # E[(u . s)^2] over unit directions u in R^3 is |s|^2 / 3.
    sw = sliced_wasserstein(a, a + shift, 4000, torch.Generator().manual_seed(1))
    assert sw == pytest.approx(3.0 / math.sqrt(3), rel=0.05)
    unequal = sliced_wasserstein(a, a[:300] + shift, 500, torch.Generator().manual_seed(1))
    assert unequal == pytest.approx(3.0 / math.sqrt(3), rel=0.15)
    with pytest.raises(ValueError, match="differ in dimension"):
        sliced_wasserstein(a, torch.zeros(5, 2))


def test_mmd_separates_distributions_and_endpoint_error_is_euclidean():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g)
    same, moved = mmd_rbf(a, b), mmd_rbf(a, b + 2.0)
    assert 0 <= same < 0.02 < moved
    assert mmd_rbf(a, a) == pytest.approx(0.0, abs=1e-12)
    assert endpoint_error(torch.zeros(2, 2), torch.tensor([[3.0, 4.0], [0.0, 1.0]])) == 3.0
    with pytest.raises(ValueError, match="same shape"):
        endpoint_error(torch.zeros(2, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="bandwidth"):
        mmd_rbf(a, b, bandwidth=0.0)
