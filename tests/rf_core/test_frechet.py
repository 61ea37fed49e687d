"""Fréchet distance in classifier features: sanity order on MNIST-5k, determinism, input checks.

One classifier is trained per module on MNIST-5k's training split (300 steps, ~10 s on one thread);
the 1,000 held-out images are split into a 500-image reference set and 500 query images, so
"real" means unseen real digits, not the reference itself.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch.nn import functional as F

from rf_core.classifier import DigitClassifier, predict, train_classifier
from rf_core.data import load_mnist5k
from rf_core.frechet import (
    INCEPTION_ENV,
    INCEPTION_WEIGHTS,
    FrechetEvaluator,
    find_inception_weights,
)


@pytest.fixture(scope="module")
def mnist():
    torch.set_num_threads(1)
    x_tr, y_tr = load_mnist5k("train")
    x_te, y_te = load_mnist5k("test")
    clf = train_classifier(x_tr, y_tr, steps=300, batch_size=64, seed=0)
    ev = FrechetEvaluator(clf, x_te[:500])
    return {"clf": clf, "ev": ev, "train": (x_tr, y_tr), "query": (x_te[500:], y_te[500:])}


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int = 3) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W) images, replicate padding."""
    k = torch.exp(-((torch.arange(2 * radius + 1) - radius) ** 2) / (2 * sigma**2))
    k2 = (k[:, None] * k[None, :] / k.sum() ** 2)[None, None]
    return F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), k2)


def test_classifier_generalises(mnist):
    xq, yq = mnist["query"]
    assert (predict(mnist["clf"], xq) == yq).float().mean() > 0.9


def test_metric_sanity_order(mnist):
    """real < blurred < class-mean ("average digit") < noise, each by a clear margin."""
    ev = mnist["ev"]
    xq, yq = mnist["query"]
    x_tr, y_tr = mnist["train"]
    class_means = torch.stack([x_tr[y_tr == c].mean(0) for c in range(10)])
    noise = torch.rand(xq.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    fd = {
        "real": ev.frechet(xq),
        "blurred": ev.frechet(gaussian_blur(xq, sigma=1.0)),
        "class_mean": ev.frechet(class_means[yq]),
        "noise": ev.frechet(noise),
    }
    assert fd["real"] >= 0
    assert fd["real"] * 10 < fd["blurred"], fd
    assert fd["blurred"] * 1.3 < fd["class_mean"], fd
    assert fd["class_mean"] * 1.3 < fd["noise"], fd


def test_frechet_is_deterministic_and_keeps_real_stats(mnist):
    ev = mnist["ev"]
    xq, _ = mnist["query"]
    first = ev.frechet(xq)
    ev.frechet(xq[:100].flip(-1))  # scoring something else must not change the reference
    assert ev.frechet(xq) == first
    assert ev.n_real == 500


def test_class_accuracy(mnist):
    ev = mnist["ev"]
    xq, yq = mnist["query"]
    assert ev.class_accuracy(xq, yq) > 0.9
    assert ev.class_accuracy(xq, (yq + 1) % 10) < 0.1  # wrong labels: disagreement


def test_bad_images(mnist):
    ev = mnist["ev"]
    xq, yq = mnist["query"]
    with pytest.raises(ValueError, match=r"images has images of shape \(1, 32, 32\)"):
        ev.frechet(torch.zeros(8, 1, 32, 32))
    with pytest.raises(ValueError, match=r"images has values in \[0, 255\]"):
        ev.frechet((xq[:8] + 1) * 127.5)
    with pytest.raises(ValueError, match="images must be a"):
        ev.frechet(xq[0])
    with pytest.raises(ValueError, match="at least 2"):
        ev.frechet(xq[:1])
    with pytest.raises(ValueError, match="y must be int64"):
        ev.class_accuracy(xq[:8], yq[:7])
    with pytest.raises(ValueError, match="not -1"):
        ev.class_accuracy(xq[:8], torch.full((8,), -1))


def test_bad_constructor_arguments():
    clf = DigitClassifier()
    with pytest.raises(ValueError, match="real has images of shape"):
        FrechetEvaluator(clf, torch.zeros(4, 3, 28, 28))
    with pytest.raises(ValueError, match="real needs at least 2"):
        FrechetEvaluator(clf, torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="classifier is required"):
        FrechetEvaluator(None, torch.zeros(4, 1, 28, 28))
    with pytest.raises(ValueError, match="batch_size"):
        FrechetEvaluator(clf, torch.zeros(4, 1, 28, 28), batch_size=0)


def test_inception_without_weights_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "nowhere.pth"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    real = torch.zeros(4, 3, 32, 32)
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS) as err:
        FrechetEvaluator(None, real, use_inception=True, inception_weights=tmp_path / "w.pth")
    msg = str(err.value)
    assert "w.pth" in msg and "nowhere.pth" in msg and INCEPTION_ENV in msg
    assert "https://" in msg  # where to get it
    assert not list(tmp_path.rglob("*.pth"))  # and nothing was downloaded


def test_inception_needs_torch_fidelity(tmp_path):
    if importlib.util.find_spec("torch_fidelity") is not None:
        pytest.skip("torch-fidelity is installed; this checks the message when it is not")
    weights = tmp_path / INCEPTION_WEIGHTS
    weights.write_bytes(b"not really weights")
    real = torch.zeros(4, 3, 32, 32)
    with pytest.raises(ModuleNotFoundError, match=r"pip install torch-fidelity==0\.4\.0"):
        FrechetEvaluator(None, real, use_inception=True, inception_weights=weights)


def test_find_inception_weights_order(tmp_path, monkeypatch):
    env_file, arg_file = tmp_path / "env.pth", tmp_path / "arg.pth"
    env_file.write_bytes(b"x")
    monkeypatch.setenv(INCEPTION_ENV, str(env_file))
    assert find_inception_weights(None) == env_file
    assert find_inception_weights(tmp_path / "absent.pth") == env_file  # falls through
    arg_file.write_bytes(b"x")
    assert find_inception_weights(arg_file) == arg_file  # an explicit path wins
