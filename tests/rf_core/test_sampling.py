"""rf_core.sampling: seeded, batched sampling with labels, solvers and guidance."""

from __future__ import annotations

import pytest
import torch

from rf_core.config import ModelConfig
from rf_core.models import build_model
from rf_core.sampling import NOISE_BLOCK, sample, sample_labels, sample_noise
from rf_core.solver_spec import SolverSpec

MLP = ModelConfig(kind="mlp", data_shape=(2,), num_classes=3, hidden=16, depth=2)
UNET = ModelConfig(kind="unet", data_shape=(1, 8, 8), num_classes=3, base_channels=8)


def _model(cfg: ModelConfig = MLP):
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_same_seed_same_samples_other_seed_other_samples():
    model, y = _model(), sample_labels(40, 3)
    a = sample(model, y, steps=3, seed=5, batch_size=16)
    b = sample(model, y, steps=3, seed=5, batch_size=16)
    c = sample(model, y, steps=3, seed=6, batch_size=16)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, y) and a.nfe == 3
    assert not torch.allclose(a.x, c.x)
    # Another batch size solves the same noise (rounding may differ in the last bits).
    torch.testing.assert_close(sample(model, y, steps=3, seed=5, batch_size=40).x, a.x)


def test_noise_of_a_sample_depends_on_seed_and_index_only():
    whole = sample_noise((2,), 0, 3 * NOISE_BLOCK, seed=1)
    assert torch.equal(sample_noise((2,), 10, NOISE_BLOCK + 7, seed=1), whole[10 : NOISE_BLOCK + 7])
    assert not torch.equal(sample_noise((2,), 0, 10, seed=2), whole[:10])
    assert whole.shape == (3 * NOISE_BLOCK, 2)


def test_guidance_zero_is_unguided_and_guidance_changes_samples():
    model, y = _model(), sample_labels(12, 3)
    plain = sample(model, y, steps=2, seed=0)
    zero = sample(model, y, steps=2, seed=0, guidance=0.0, label_dropout=0.1)
    guided = sample(model, y, steps=2, seed=0, guidance=3.0, label_dropout=0.1)
    assert torch.equal(zero.x, plain.x) and zero.nfe == 2
    assert guided.nfe == 4 and not torch.allclose(guided.x, plain.x)
    unconditional = sample(model, torch.full((12,), -1), steps=2, seed=0, label_dropout=0.1)
    assert not torch.allclose(unconditional.x, plain.x)


def test_a_model_trained_without_dropout_refuses_guidance_and_label_minus_one():
    model = _model()
    with pytest.raises(ValueError, match=r"guidance 2 needs .* label dropout; m-1 was trained"):
        sample(model, sample_labels(4, 3), steps=1, guidance=2.0, name="m-1")
    with pytest.raises(ValueError, match=r"label -1 \(unconditional\) needs"):
        sample(model, torch.tensor([0, -1]), steps=1, name="m-1")


def test_any_solver_recipe_and_its_guidance():
    model, y = _model(), sample_labels(6, 3)
    rk4 = sample(model, y, solver=SolverSpec(method="rk4", steps=2), seed=0)
    assert rk4.nfe == 8
    spec = SolverSpec(method="euler", steps=2, guidance=1.0)
    from_spec = sample(model, y, solver=spec, seed=0, label_dropout=0.1)
    explicit = sample(model, y, steps=2, guidance=1.0, seed=0, label_dropout=0.1)
    assert torch.equal(from_spec.x, explicit.x) and from_spec.nfe == 4
    with pytest.raises(ValueError, match="give steps"):
        sample(model, y, steps=2, solver=spec)


def test_images_are_clamped_to_the_pixel_range():
    res = sample(_model(UNET), sample_labels(4, 3), steps=1, seed=0)
    assert res.x.shape == (4, 1, 8, 8) and res.x.dtype == torch.float32
    assert float(res.x.min()) >= -1 and float(res.x.max()) <= 1


def test_labels_of_a_request():
    assert sample_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert sample_labels(5, 10, labels=[4, 2]).tolist() == [4, 2, 4, 2, 4]
    assert sample_labels(None, 3, per_class=2).tolist() == [0, 0, 1, 1, 2, 2]
    assert sample_labels(3, 0).tolist() == [-1, -1, -1]
    for kw, says in [
        ({"n": 0}, "n must be a positive number"),
        ({"n": None}, "n must be a positive number"),
        ({"n": 4, "per_class": 2}, "per_class alone"),
        ({"n": None, "per_class": 0}, "per_class must be > 0"),
        ({"n": 4, "labels": []}, "at least one label"),
    ]:
        with pytest.raises(ValueError, match=says):
            sample_labels(num_classes=3, **kw)
