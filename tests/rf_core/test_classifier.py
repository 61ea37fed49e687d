"""DigitClassifier: shapes, determinism, checkpoints and input checks (tiny data, a few steps)."""

from __future__ import annotations

import pytest
import torch

from rf_core.classifier import (
    DigitClassifier,
    check_images,
    features,
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)
from rf_core.config import ClassifierRecipe


def _recipe(steps: int, batch_size: int = 8, seed: int = 0) -> ClassifierRecipe:
    return ClassifierRecipe(width=8, feature_dim=16, steps=steps, batch_size=batch_size, seed=seed)


def _toy_images(n: int = 64, shape=(1, 28, 28), seed: int = 0):
    """Two trivially separable classes: dark vs bright images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    level = torch.where(y == 1, 0.4, -0.7).view(-1, 1, 1, 1)
    x = 0.3 * torch.rand((n, *shape), generator=g) + level
    return x.clamp(-1, 1), y.long()


def test_shapes_mnist_and_generic():
    clf = DigitClassifier().eval()
    x = torch.zeros(3, 1, 28, 28)
    assert clf(x).shape == (3, 10)
    # channel means of the three blocks (16 + 32 + 64) beside the 128 penultimate values
    assert clf.features(x).shape == (3, clf.num_features) and clf.num_features == 112 + 128
    rgb = DigitClassifier((3, 32, 32), num_classes=7, width=8, feature_dim=64).eval()
    assert rgb(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert rgb.features(torch.zeros(2, 3, 32, 32)).shape == (2, 56 + 64)


def test_features_are_standardised_on_the_training_images():
    x, y = _toy_images(64, shape=(1, 16, 16))
    clf = train_classifier(x, y, _recipe(3))
    f = features(clf, x)
    live = clf.feature_scale > clf.feature_scale.median() * 0.011  # not a clamped (dead) filter
    assert torch.allclose(f.mean(0), torch.zeros(f.shape[1]), atol=1e-4)
    assert torch.allclose(f.std(0)[live], torch.ones(int(live.sum())), atol=1e-3)
    # a filter that never varies gets a typical scale, not a division by ~0
    assert float(clf.feature_scale.min()) >= 0.01 * float(clf.feature_scale.median())


def test_training_is_deterministic_and_learns():
    torch.set_num_threads(1)
    x, y = _toy_images(shape=(1, 16, 16))  # small images: 3 × 30 steps in about a second
    a = train_classifier(x, y, _recipe(30, 16, seed=3))
    b = train_classifier(x, y, _recipe(30, 16, seed=3))
    c = train_classifier(x, y, _recipe(30, 16, seed=4))
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.fc.weight, c.fc.weight)
    assert torch.equal(a.feature_scale, b.feature_scale)
    assert (predict(a, x) == y).float().mean() == 1.0  # separable: must be learnt in 30 steps
    assert a.num_classes == 2 and not a.training


def test_training_leaves_global_rng_alone():
    x, y = _toy_images(16)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_classifier(x, y, _recipe(2))
    assert torch.equal(torch.rand(3), expected)


def test_save_load_roundtrip_never_overwrites(tmp_path):
    x, y = _toy_images(16)
    clf = train_classifier(x, y, _recipe(2))
    path = save_classifier(tmp_path / "sub" / "clf.pt", clf, extra={"dataset": "toy"})
    loaded, extra = load_classifier(path)
    assert extra == {"dataset": "toy"}
    assert torch.equal(loaded(x), clf(x).detach())
    with pytest.raises(FileExistsError, match="never overwritten"):
        save_classifier(path, clf)
    assert not list(path.parent.glob("*.tmp"))


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_classifier(tmp_path / "missing.pt")
    x, y = _toy_images(16)
    path = save_classifier(tmp_path / "clf.pt", train_classifier(x, y, _recipe(1)))
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"truncated\.pt"):
        load_classifier(bad)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match=r"other\.pt"):
        load_classifier(other)
    # a checkpoint of the earlier two-block network: refused, never silently mis-loaded
    blob = torch.load(path, weights_only=True)
    del blob["hparams"]["arch"]
    older = tmp_path / "older.pt"
    torch.save(blob, older)
    with pytest.raises(
        ValueError, match=r"older\.pt holds a classifier of architecture 'digitcnn/1'.*delete it"
    ):
        load_classifier(older)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (torch.zeros(4, 28, 28), r"\(N, C, H, W\)"),
        (torch.full((4, 1, 28, 28), 255.0), r"\[-1, 1\]"),
        (torch.zeros(4, 1, 28, 28, dtype=torch.uint8), "floating point"),
        (torch.full((4, 1, 28, 28), float("nan")), "NaN"),
        (torch.zeros(0, 1, 28, 28), "empty"),
    ],
)
def test_check_images_rejects(x, match):
    with pytest.raises(ValueError, match=match):
        check_images(x, "images")


def test_check_images_shape_and_ok():
    check_images(torch.rand(2, 1, 28, 28) * 2 - 1, "x", (1, 28, 28))
    with pytest.raises(ValueError, match=r"images has images of shape \(1, 32, 32\)"):
        check_images(torch.zeros(2, 1, 32, 32), "images", (1, 28, 28))


def test_train_classifier_bad_arguments():
    x, y = _toy_images(8)
    with pytest.raises(ValueError, match="y must be int64"):
        train_classifier(x, y.int(), _recipe(1, 4))
    with pytest.raises(ValueError, match="steps"):
        ClassifierRecipe(steps=0)
    with pytest.raises(ValueError, match="batch_size"):
        ClassifierRecipe(batch_size=0)
    with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
        train_classifier(x, y - 1, _recipe(1, 4), num_classes=2)
    with pytest.raises(ValueError, match="x has values"):
        train_classifier(x * 300, y, _recipe(1, 4))
    with pytest.raises(ValueError, match="in_shape"):
        DigitClassifier((28, 28))
    with pytest.raises(ValueError, match="num_classes"):
        DigitClassifier(num_classes=1)
