"""Pair error, its per-sample split, its upper bound, and the reference solve."""

from __future__ import annotations

import math

import pytest
import torch

from rf_core import models
from rf_core.config import ModelConfig
from rf_core.models import build_model
from rf_core.pair_error import (
    ERROR_BOUND_Z,
    error_bound,
    pair_error,
    reference_solve,
    sample_errors,
)

TINY_UNET = ModelConfig(
    kind="unet", data_shape=(1, 8, 8), num_classes=10, base_channels=8, channel_mult=(1,)
)
_original_embedding = models.timestep_embedding


def test_pair_error_on_a_known_case():
    ref = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # RMS = sqrt(25 / 4) = 2.5
    x1 = ref + torch.tensor([[0.5, -0.5], [0.5, -0.5]])  # RMS of the difference = 0.5
    assert pair_error(x1, ref) == pytest.approx(0.2)
    assert pair_error(ref, ref) == 0.0
    with pytest.raises(ValueError, match=r"x1 \(2, 2\) and x1_ref \(4,\) differ in shape"):
        pair_error(x1, ref.flatten())


def test_sample_errors_split_the_pair_error_by_sample():
    ref = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # RMS = 2.5
    x1 = ref + torch.tensor([[0.0, 0.0], [1.0, -1.0]])  # only the second sample is off, by 1
    errs = sample_errors(x1, ref)
    assert errs.tolist() == pytest.approx([0.0, 0.4])
    assert errs.pow(2).mean().sqrt().item() == pytest.approx(pair_error(x1, ref))
    with pytest.raises(ValueError, match="differ in shape"):
        sample_errors(x1, ref[:1])


def test_the_bound_adds_standard_errors_and_widens_with_an_outlier():
    even = torch.full((16,), 1e-3)
    assert error_bound(even) == pytest.approx(1e-3)  # no spread: the error itself
    errs = torch.tensor([1e-3] * 15 + [5e-3])
    sq = errs.double().pow(2)
    want = math.sqrt(float(sq.mean()) + ERROR_BOUND_Z * float(sq.std()) / 4)
    assert error_bound(errs) == pytest.approx(want)
    assert error_bound(errs) > float(sq.mean().sqrt()) > error_bound(even)
    assert error_bound(torch.tensor([2e-3])) == pytest.approx(2e-3)  # one draw: no spread


def test_reference_is_a_float64_solve_that_leaves_the_model_alone():
    torch.manual_seed(0)
    model = build_model(TINY_UNET).eval()
    x0, y = torch.randn(3, *TINY_UNET.data_shape), torch.randint(0, 10, (3,))
    ref = reference_solve(model, x0, y, tol=1e-6, batch_size=2, dtype=torch.float64)
    assert ref.x1.dtype == torch.float64 and ref.x1.shape == x0.shape and ref.nfe > 6
    assert next(model.parameters()).dtype == torch.float32  # a double copy was solved
    assert models.timestep_embedding is _original_embedding  # nothing swapped globally
    f32 = reference_solve(model, x0, y, tol=1e-6, batch_size=2)
    assert f32.x1.dtype == torch.float32 and f32.nfe > 6
    assert 0 < pair_error(f32.x1, ref.x1) < 1e-3  # the same ODE, float32 round-off apart
