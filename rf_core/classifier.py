"""A small CNN classifier whose penultimate features define the Fréchet distance for digits.

Inception features suit 299×299 photos, not 28×28 digits, so the pipeline trains
this network once per dataset on the training split and measures generated images in its
feature space. Training is short (a few hundred steps on CPU) and deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rf_core.training import save_atomically


class DigitClassifier(nn.Module):
    """Two conv blocks + an MLP head for ``(C, H, W)`` images in [-1, 1].

    Args:
        in_shape: ``(C, H, W)`` of one image, e.g. ``(1, 28, 28)`` or ``(3, 32, 32)``.
        num_classes: number of output logits.
        width: channels of the first conv block (the second has ``2 * width``).
        feature_dim: width of the penultimate layer returned by :meth:`features`.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int] = (1, 28, 28),
        num_classes: int = 10,
        width: int = 16,
        feature_dim: int = 128,
    ):
        super().__init__()
        if len(in_shape) != 3 or any(d <= 0 for d in in_shape):
            raise ValueError(f"in_shape must be (C, H, W) positive ints, got {in_shape}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.in_shape = tuple(int(d) for d in in_shape)
        self.num_classes = int(num_classes)
        self.width = int(width)
        # torchmetrics' FID reads `num_features` instead of probing with a dummy image.
        self.num_features = int(feature_dim)
        c = self.in_shape[0]
        self.conv = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            # A fixed 4×4 grid makes the head independent of H and W (28 → 7 → 4, 32 → 8 → 4).
            nn.AdaptiveAvgPool2d(4),
        )
        self.fc = nn.Linear(2 * width * 16, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations.

        Args:
            x: (B, C, H, W) images in [-1, 1].

        Returns:
            (B, feature_dim) features (after ReLU).
        """
        return F.relu(self.fc(self.conv(x).flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        return self.head(self.features(x))

    def hparams(self) -> dict:
        """Constructor arguments, enough to rebuild the network before loading a state dict."""
        return {
            "in_shape": list(self.in_shape),
            "num_classes": self.num_classes,
            "width": self.width,
            "feature_dim": self.num_features,
        }


def check_images(x: Tensor, name: str = "x", shape: tuple[int, ...] | None = None) -> None:
    """Raise ValueError unless ``x`` is a finite float batch (N, C, H, W) with values in [-1, 1].

    Args:
        x: the batch to check.
        name: argument name used in the message.
        shape: required ``(C, H, W)``, or None for any.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (N, C, H, W) tensor, got {got}")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{name} has images of shape {tuple(x.shape[1:])}; expected {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point in [-1, 1], got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    # A small tolerance for float round-off; [0, 255] or unclamped samples fail loudly.
    if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
        raise ValueError(
            f"{name} has values in [{lo:.3g}, {hi:.3g}]; expected [-1, 1] "
            "(rescale [0, 1] or [0, 255] data, clamp generated samples with x.clamp(-1, 1))"
        )


def train_classifier(
    x: Tensor,
    y: Tensor,
    steps: int = 300,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
    lr: float = 2e-3,
    num_classes: int | None = None,
) -> DigitClassifier:
    """Train a :class:`DigitClassifier` with Adam on labelled images.

    Deterministic for a seed on a given device: initialisation and batch order come from seeded
    generators and the global RNG is left untouched.

    Args:
        x: (N, C, H, W) training images in [-1, 1].
        y: (N,) int64 labels in [0, num_classes).
        steps: optimizer steps (300 × 128 ≈ 10 epochs of MNIST-5k's 4,000 images).
        batch_size: images per step.
        seed: seeds initialisation and batch order.
        device: where to train.
        lr: Adam learning rate.
        num_classes: number of classes; default ``int(y.max()) + 1``.

    Returns:
        The trained classifier in eval mode on ``device``.
    """
    check_images(x, "x")
    if y.dtype != torch.int64 or y.shape != (x.shape[0],):
        raise ValueError(f"y must be int64 of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}")
    if steps <= 0 or batch_size <= 0:
        raise ValueError(f"steps and batch_size must be > 0, got {steps}, {batch_size}")
    n_cls = int(y.max()) + 1 if num_classes is None else num_classes
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= n_cls:
        raise ValueError(f"y must hold labels in [0, {n_cls}), got [{lo}, {hi}]")

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = DigitClassifier(tuple(x.shape[1:]), num_classes=n_cls).to(device)
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    clf.train()
    perm, pos = torch.randperm(len(x), generator=gen), 0
    for _ in range(steps):
        # Walk through a fresh permutation each epoch: every image is seen once per epoch.
        if pos + batch_size > len(x):
            perm, pos = torch.randperm(len(x), generator=gen), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        loss = F.cross_entropy(clf(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return clf.eval()


@torch.inference_mode()
def predict(clf: DigitClassifier, x: Tensor, batch_size: int = 500) -> Tensor:
    """(N, C, H, W) images -> (N,) int64 predicted labels, computed in batches."""
    clf.eval()
    device = next(clf.parameters()).device
    out = [clf(xb.to(device)).argmax(1).cpu() for xb in x.split(batch_size)]
    return torch.cat(out)


def save_classifier(path: str | Path, clf: DigitClassifier, extra: dict | None = None) -> Path:
    """Write ``{"hparams", "state_dict", "extra"}`` to a new file; never overwrites.

    Raises:
        FileExistsError: if ``path`` exists.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; classifier checkpoints are never overwritten")
    state = {k: v.cpu() for k, v in clf.state_dict().items()}
    return save_atomically(
        {"hparams": clf.hparams(), "state_dict": state, "extra": extra or {}}, path
    )


def load_classifier(path: str | Path, map_location: str = "cpu") -> tuple[DigitClassifier, dict]:
    """Load a classifier written by :func:`save_classifier` (``weights_only=True``).

    Returns:
        (classifier in eval mode, extra dict).

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: naming the file when it is truncated or not a classifier checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint {path} not found")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
        hp = blob["hparams"]
        clf = DigitClassifier(
            tuple(hp["in_shape"]), hp["num_classes"], hp["width"], hp["feature_dim"]
        )
        clf.load_state_dict(blob["state_dict"])
    except Exception as e:  # corrupt pickle, missing keys, shape mismatch
        raise ValueError(f"{path} is not a valid DigitClassifier checkpoint: {e}") from e
    return clf.eval(), dict(blob.get("extra", {}))
