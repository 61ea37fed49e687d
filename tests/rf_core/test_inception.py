"""Inception FID on a stand-in network: torch-fidelity's Inception-v3 with RANDOM weights saved
in the real weights' file format, so the real loading path runs offline. The distances are
meaningless as image quality; what is tested is that they are torchmetrics' standard FID."""

from __future__ import annotations

import pytest
import torch

from rf_core.frechet import (
    INCEPTION_WEIGHTS,
    FrechetEvaluator,
    to_uint8,
)


@pytest.mark.slow  # ~15 s of Inception forwards on one core (more when the machine is busy)
def test_evaluator_fid_equals_torchmetrics_standard_fid_on_the_same_images(inception_weights):
    from torchmetrics.image.fid import FrechetInceptionDistance

    weights = inception_weights
    g = torch.Generator().manual_seed(0)
    real = torch.rand(5, 3, 16, 16, generator=g) * 2 - 1
    fake = (torch.rand(5, 3, 16, 16, generator=g) * 1.6 - 0.9).clamp(-1, 1)
    ours = FrechetEvaluator(None, real, batch_size=3, inception_weights=weights, use_inception=True)
    got = ours.frechet(fake)
    direct = FrechetInceptionDistance(
        feature=2048, feature_extractor_weights_path=str(weights), antialias=False
    )
    direct.update(to_uint8(real), real=True)
    direct.update(to_uint8(fake), real=False)
    want = float(direct.compute())
    assert want > 0 and got == pytest.approx(want, rel=1e-6)
    assert ours.frechet(fake) == got  # real statistics kept, fake ones reset


def test_a_file_that_is_not_the_weights_is_named(tmp_path):
    bad = tmp_path / INCEPTION_WEIGHTS
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"Inception weights file {bad} is not"):
        FrechetEvaluator(None, torch.zeros(4, 3, 8, 8), inception_weights=bad, use_inception=True)
