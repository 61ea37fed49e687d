"""The digit classifier whose features define the Fréchet distance, precision and recall.

Inception features suit 299×299 photos, not 28×28 digits, so the pipeline trains this network
once per dataset on the training split and measures generated images in its feature space
(docs/evaluation.md). Three conv blocks (two 3×3 convs with batch norm each) at full, half and
quarter resolution, trained with random affine and elastic deformations: ≥ 98 % held-out
accuracy on MNIST-5k. A strong classifier learns to ignore what does not change the class —
speckle, blur, blocky pixels — in its last layer, so the features are multi-scale: the mean
activation of every channel of each block (how strongly each learned filter fires, at 28, 14
and 7 pixels) beside the penultimate layer, each dimension standardised by its mean and spread
over the training images. Training is deterministic for a seed on one machine and thread count.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rf_core.augment import augment_batch
from rf_core.config import ClassifierRecipe
from rf_core.training import save_atomically

ARCH = "digitcnn/2"  # bump when the network changes: a new key, old cached classifiers unused


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3×3 conv + batch norm + ReLU at one resolution."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class DigitClassifier(nn.Module):
    """Three conv blocks (H, H/2, H/4) + a linear penultimate layer + a linear head.

    :meth:`features` are ``7 * width + feature_dim`` values: the channel means of the three
    blocks and the penultimate layer, standardised with statistics set by
    :meth:`set_feature_stats` (identity until then).

    Args:
        in_shape: ``(C, H, W)`` of one image, e.g. ``(1, 28, 28)`` or ``(3, 32, 32)``.
        num_classes: number of output logits.
        width: channels of the first block (then ``2 * width``, ``4 * width``).
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
        self.feature_dim = int(feature_dim)
        self.num_features = 7 * self.width + self.feature_dim
        c, w = self.in_shape[0], self.width
        self.blocks = nn.ModuleList([_block(c, w), _block(w, 2 * w), _block(2 * w, 4 * w)])
        # A fixed 7×7 grid: 28 → 7 is the identity, 32 → 8 → 7 nearly so.
        self.grid = nn.AdaptiveAvgPool2d(7)
        self.fc = nn.Linear(4 * w * 49, feature_dim)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)
        self.register_buffer("feature_mean", torch.zeros(self.num_features))
        self.register_buffer("feature_scale", torch.ones(self.num_features))

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) -> (raw multi-scale features (B, num_features), penultimate (B, D))."""
        means, h = [], x
        for i, block in enumerate(self.blocks):
            h = block(F.max_pool2d(h, 2) if i else h)
            means.append(h.mean((2, 3)))
        pen = F.relu(self.fc(self.grid(h).flatten(1)))
        return torch.cat([*means, pen], 1), pen

    def features(self, x: Tensor) -> Tensor:
        """Standardised multi-scale features.

        Args:
            x: (B, C, H, W) images in [-1, 1].

        Returns:
            (B, num_features): channel means of the three blocks, then the penultimate layer.
        """
        return (self._forward(x)[0] - self.feature_mean) / self.feature_scale

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images -> (B, num_classes) logits."""
        return self.head(self.drop(self._forward(x)[1]))

    @torch.no_grad()
    def set_feature_stats(self, x: Tensor, batch_size: int = 500) -> None:
        """Standardise :meth:`features` by their mean and spread over images ``x`` (N, C, H, W).

        A dimension that hardly varies over ``x`` (a filter that seldom fires) gets the scale
        of a typical one (at least 1 % of the median), so it cannot blow up the distance.
        """
        self.eval()
        raw = torch.cat([self._forward(b)[0] for b in x.split(batch_size)])
        std = raw.std(0)
        self.feature_mean.copy_(raw.mean(0))
        self.feature_scale.copy_(std.clamp_min(0.01 * float(std.median()) + 1e-12))

    def hparams(self) -> dict:
        """Constructor arguments, enough to rebuild the network before loading a state dict."""
        return {
            "arch": ARCH,
            "in_shape": list(self.in_shape),
            "num_classes": self.num_classes,
            "width": self.width,
            "feature_dim": self.feature_dim,
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


def _check_labels(x: Tensor, y: Tensor, num_classes: int | None) -> int:
    if y.dtype != torch.int64 or y.shape != (x.shape[0],):
        raise ValueError(f"y must be int64 of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}")
    n_cls = int(y.max()) + 1 if num_classes is None else num_classes
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= n_cls:
        raise ValueError(f"y must hold labels in [0, {n_cls}), got [{lo}, {hi}]")
    return n_cls


def train_classifier(
    x: Tensor,
    y: Tensor,
    recipe: ClassifierRecipe | None = None,
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
) -> DigitClassifier:
    """Train a :class:`DigitClassifier` with AdamW (one-cycle schedule) on labelled images.

    Deterministic for ``recipe.seed`` on a given device and thread count: initialisation, batch
    order and augmentation come from seeded generators and the global RNG is left untouched.

    Args:
        x: (N, C, H, W) training images in [-1, 1].
        y: (N,) int64 labels in [0, num_classes).
        recipe: architecture and training settings (default: :class:`ClassifierRecipe()`).
        device: where to train.
        num_classes: number of classes; default ``int(y.max()) + 1``.

    Returns:
        The trained classifier in eval mode on ``device``.
    """
    r = recipe or ClassifierRecipe()
    check_images(x, "x")
    n_cls = _check_labels(x, y, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(r.seed)
        clf = DigitClassifier(tuple(x.shape[1:]), n_cls, r.width, r.feature_dim).to(device)
    opt = torch.optim.AdamW(clf.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r.lr, total_steps=r.steps)
    gen = torch.Generator().manual_seed(r.seed)
    bs = min(r.batch_size, len(x))
    clf.train()
    perm, pos = torch.randperm(len(x), generator=gen), 0
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global RNG: keep it local
        torch.manual_seed(r.seed + 1)
        for _ in range(r.steps):
            # Walk through a fresh permutation each epoch: every image is seen once per epoch.
            if pos + bs > len(x):
                perm, pos = torch.randperm(len(x), generator=gen), 0
            idx = perm[pos : pos + bs]
            pos += bs
            xb = augment_batch(x[idx], gen) if r.augment else x[idx]
            logits = clf(xb.to(device))
            loss = F.cross_entropy(logits, y[idx].to(device), label_smoothing=r.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    clf.set_feature_stats(x.to(device))
    return clf.eval()


@torch.inference_mode()
def predict(clf: DigitClassifier, x: Tensor, batch_size: int = 500) -> Tensor:
    """(N, C, H, W) images -> (N,) int64 predicted labels, computed in batches."""
    clf.eval()
    device = next(clf.parameters()).device
    out = [clf(xb.to(device)).argmax(1).cpu() for xb in x.split(batch_size)]
    return torch.cat(out)


@torch.no_grad()
def features(clf: DigitClassifier, x: Tensor, batch_size: int = 500) -> Tensor:
    """(N, C, H, W) images -> (N, feature_dim) float32 features on the CPU, in batches."""
    clf.eval()
    device = next(clf.parameters()).device
    return torch.cat([clf.features(xb.to(device)).float().cpu() for xb in x.split(batch_size)])


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
        ValueError: naming the file when it is truncated, not a classifier checkpoint, or of
            an older architecture (retrain it: delete the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier checkpoint {path} not found")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
        hp = blob["hparams"]
    except Exception as e:  # corrupt pickle, missing keys
        raise ValueError(f"{path} is not a valid DigitClassifier checkpoint: {e}") from e
    if hp.get("arch") != ARCH:
        raise ValueError(
            f"{path} holds a classifier of architecture {hp.get('arch', 'digitcnn/1')!r}, not "
            f"{ARCH!r}; its scores are not comparable: delete it and let evaluation retrain"
        )
    try:
        clf = DigitClassifier(
            tuple(hp["in_shape"]), hp["num_classes"], hp["width"], hp["feature_dim"]
        )
        clf.load_state_dict(blob["state_dict"])
    except Exception as e:  # missing keys, shape mismatch
        raise ValueError(f"{path} is not a valid DigitClassifier checkpoint: {e}") from e
    return clf.eval(), dict(blob.get("extra", {}))
