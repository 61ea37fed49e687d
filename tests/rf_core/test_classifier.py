"""DigitClassifier: shapes, determinism, checkpoints and input checks (tiny data, a few steps)."""

from __future__ import annotations

import pytest
import torch

from rf_core.classifier import (
    DigitClassifier,
    check_images,
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)


def _toy_images(n: int = 64, shape=(1, 28, 28), seed: int = 0):
    """Two trivially separable classes: dark vs bright images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    level = torch.where(y == 1, 0.4, -0.7).view(-1, 1, 1, 1)
    x = 0.3 * torch.rand((n, *shape), generator=g) + level
    return x.clamp(-1, 1), y.long()


def test_shapes_mnist_and_generic():
    clf = DigitClassifier()
    x = torch.zeros(3, 1, 28, 28)
    assert clf(x).shape == (3, 10)
    assert clf.features(x).shape == (3, clf.num_features)
    rgb = DigitClassifier((3, 32, 32), num_classes=7, feature_dim=64)
    assert rgb(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert rgb.features(torch.zeros(2, 3, 32, 32)).shape == (2, 64)


def test_training_is_deterministic_and_learns():
    torch.set_num_threads(1)
    x, y = _toy_images(shape=(1, 16, 16))  # small images: 3 × 30 steps in about a second
    a = train_classifier(x, y, steps=30, batch_size=16, seed=3)
    b = train_classifier(x, y, steps=30, batch_size=16, seed=3)
    c = train_classifier(x, y, steps=30, batch_size=16, seed=4)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.fc.weight, c.fc.weight)
    assert (predict(a, x) == y).float().mean() == 1.0  # separable: must be learnt in 30 steps
    assert a.num_classes == 2 and not a.training


def test_training_leaves_global_rng_alone():
    x, y = _toy_images(16)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_classifier(x, y, steps=2, batch_size=8, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_save_load_roundtrip_never_overwrites(tmp_path):
    x, y = _toy_images(16)
    clf = train_classifier(x, y, steps=2, batch_size=8, seed=0)
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
    path = save_classifier(tmp_path / "clf.pt", train_classifier(x, y, steps=1, batch_size=8))
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"truncated\.pt"):
        load_classifier(bad)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match=r"other\.pt"):
        load_classifier(other)


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
        train_classifier(x, y.int(), steps=1, batch_size=4)
    with pytest.raises(ValueError, match="steps and batch_size"):
        train_classifier(x, y, steps=0, batch_size=4)
    with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
        train_classifier(x, y - 1, steps=1, batch_size=4, num_classes=2)
    with pytest.raises(ValueError, match="x has values"):
        train_classifier(x * 300, y, steps=1, batch_size=4)
    with pytest.raises(ValueError, match="in_shape"):
        DigitClassifier((28, 28))
    with pytest.raises(ValueError, match="num_classes"):
        DigitClassifier(num_classes=1)
