"""Fréchet distance, precision and recall in classifier features: the sanity check, checks.

One classifier is trained per module on MNIST-5k's training split (a shortened recipe: 300
steps, ~40 s on one thread; the pipeline's 1,200-step recipe is measured in
benchmarks/classifier_sanity.py); the 1,000 held-out images are split into a 500-image reference
set and 500 query images, so "real" means unseen real digits, not the reference itself.
"""

from __future__ import annotations

import pytest
import torch

from rf_core.augment import DEGRADATIONS, box_blur, speckle
from rf_core.classifier import DigitClassifier, predict, train_classifier
from rf_core.config import ClassifierRecipe
from rf_core.data import load_mnist5k
from rf_core.frechet import (
    INCEPTION_ENV,
    INCEPTION_WEIGHTS,
    FrechetEvaluator,
    find_inception_weights,
    precision_recall,
)

SLOW = pytest.mark.slow  # the first test to use the module's classifier trains it: ~40 s


@pytest.fixture(scope="module")
def mnist():
    x_tr, y_tr = load_mnist5k("train")
    x_te, y_te = load_mnist5k("test")
    clf = train_classifier(x_tr, y_tr, ClassifierRecipe(steps=300))
    ev = FrechetEvaluator(clf, x_te[:500])
    return {"clf": clf, "ev": ev, "train": (x_tr, y_tr), "query": (x_te[500:], y_te[500:])}


@SLOW
def test_classifier_generalises(mnist):
    xq, yq = mnist["query"]
    assert (predict(mnist["clf"], xq) == yq).float().mean() > 0.96


@SLOW
def test_metric_sanity_known_degradations(mnist):
    """Every degradation far above real digits, stronger is worse, class means and noise last."""
    ev = mnist["ev"]
    xq, yq = mnist["query"]
    x_tr, y_tr = mnist["train"]
    class_means = torch.stack([x_tr[y_tr == c].mean(0) for c in range(10)])[yq]
    noise = torch.rand(xq.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    real = ev.frechet(xq)
    fd = {name: ev.frechet(f(xq).clamp(-1, 1)) for name, f in DEGRADATIONS.items()}
    assert 0 <= real < 10, real
    for name, value in fd.items():
        assert value > 4 * real, (name, value, real)
    assert fd["speckle 2%"] * 1.5 < fd["speckle 5%"] and fd["speckle 5%"] * 1.5 < fd["speckle 10%"]
    assert fd["box blur 3×3"] * 1.5 < fd["box blur 5×5"], fd
    means, rand = ev.frechet(class_means), ev.frechet(noise)
    assert max(fd.values()) < means < rand, (fd, means, rand)
    # precision sees fidelity: noise lies off the real manifold; recall sees diversity: ten
    # images (one per class) cover almost none of it
    real_s, mean_s, noise_s = ev.score(xq), ev.score(class_means), ev.score(noise)
    assert real_s.precision > 0.7 and real_s.recall > 0.7, real_s
    assert noise_s.precision < 0.05 and mean_s.recall < 0.05, (noise_s, mean_s)
    assert real_s.fd == real


def test_degradations_change_what_they_say():
    x = torch.where(
        torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.3, 1.0, -1.0
    )
    hit = (speckle(x, 0.05) != x).float().mean()
    assert 0.01 < hit < 0.05  # half the hits land on their own value
    assert torch.equal(speckle(x, 0.05), speckle(x, 0.05))  # seeded
    assert torch.allclose(box_blur(torch.ones(1, 1, 6, 6), 3), torch.ones(1, 1, 6, 6))
    assert set(DEGRADATIONS) >= {"pixelate 2×2", "speckle 10%", "box blur 5×5"}
    ink = torch.full((2, 1, 28, 28), -1.0)
    ink[:, :, 10:18, 10:18] = 1.0
    erased = DEGRADATIONS["erase 4 patches 4×4"](ink)
    assert (erased < ink).any() and (erased <= ink).all()  # only ink is erased, to background


def test_precision_recall_of_known_sets():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=g)
    assert precision_recall(real, real) == (1.0, 1.0)
    far = torch.randn(300, 8, generator=g) + 100
    assert precision_recall(far, real) == (0.0, 0.0)
    # mode collapse: samples all near one real point are precise but recall little
    collapsed = real[:1] + 0.01 * torch.randn(300, 8, generator=g)
    p, r = precision_recall(collapsed, real)
    assert p == 1.0 and r < 0.05
    # a fresh draw of the same distribution: both high
    p, r = precision_recall(torch.randn(400, 8, generator=g), real)
    assert p > 0.6 and r > 0.6


@SLOW
def test_frechet_is_deterministic_and_keeps_real_stats(mnist):
    ev = mnist["ev"]
    xq, _ = mnist["query"]
    first = ev.frechet(xq)
    ev.frechet(xq[:100].flip(-1))  # scoring something else must not change the reference
    assert ev.frechet(xq) == first
    assert ev.n_real == 500


@SLOW
def test_class_accuracy(mnist):
    ev = mnist["ev"]
    xq, yq = mnist["query"]
    assert ev.class_accuracy(xq, yq) > 0.9
    assert ev.class_accuracy(xq, (yq + 1) % 10) < 0.1  # wrong labels: disagreement


@SLOW
def test_bad_images(mnist):
    ev = mnist["ev"]
    xq, yq = mnist["query"]
    with pytest.raises(ValueError, match=r"images has images of shape \(1, 32, 32\)"):
        ev.frechet(torch.zeros(8, 1, 32, 32))
    with pytest.raises(ValueError, match=r"images has values in \[0, 255\]"):
        ev.frechet((xq[:8] + 1) * 127.5)
    with pytest.raises(ValueError, match="images must be a"):
        ev.frechet(xq[0])
    with pytest.raises(ValueError, match="at least 4"):
        ev.frechet(xq[:3])
    with pytest.raises(ValueError, match="y must be int64"):
        ev.class_accuracy(xq[:8], yq[:7])
    with pytest.raises(ValueError, match="not -1"):
        ev.class_accuracy(xq[:8], torch.full((8,), -1))


def test_bad_constructor_arguments():
    clf = DigitClassifier()
    with pytest.raises(ValueError, match="real has images of shape"):
        FrechetEvaluator(clf, torch.zeros(4, 3, 28, 28))
    with pytest.raises(ValueError, match="real needs at least 4"):
        FrechetEvaluator(clf, torch.zeros(3, 1, 28, 28))
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


def test_find_inception_weights_order(tmp_path, monkeypatch):
    env_file, arg_file = tmp_path / "env.pth", tmp_path / "arg.pth"
    env_file.write_bytes(b"x")
    monkeypatch.setenv(INCEPTION_ENV, str(env_file))
    assert find_inception_weights(None) == env_file
    assert find_inception_weights(tmp_path / "absent.pth") == env_file  # falls through
    arg_file.write_bytes(b"x")
    assert find_inception_weights(arg_file) == arg_file  # an explicit path wins
