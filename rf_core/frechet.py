"""Fréchet distance of generated images to held-out real images, plus class consistency.

The distance itself is torchmetrics' ``FrechetInceptionDistance`` (its covariance square root,
its float64 accumulators): for digits with the penultimate features of a
:class:`~rf_core.classifier.DigitClassifier` plugged in as a custom feature extractor (no
torch-fidelity, no download), for CIFAR-10 with Inception-v3 when its weights file is on disk.
The real statistics are computed once per evaluator and kept across calls. torchmetrics is
imported lazily (it takes seconds), so 2-D toy evaluations never load it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from rf_core.classifier import DigitClassifier, check_images, predict

INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS}"
)
INCEPTION_ENV = "RECTIFLOW_INCEPTION_WEIGHTS"


class _ClassifierFeatures(nn.Module):
    """Adapter: torchmetrics calls ``feature(imgs)`` and reads ``num_features``."""

    def __init__(self, clf: DigitClassifier):
        super().__init__()
        self.clf = clf.eval()
        self.num_features = clf.num_features

    def forward(self, x: Tensor) -> Tensor:
        device = next(self.clf.parameters()).device
        return self.clf.features(x.to(device))


class _InceptionFeatures(nn.Module):
    """Adapter: [-1, 1] float images -> 2048-d Inception pool features (torchmetrics' wrapper)."""

    def __init__(self, weights: Path):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

        if not _TORCH_FIDELITY_AVAILABLE:
            raise ModuleNotFoundError(
                f"Inception FID (weights {weights}) needs the Inception network definition of "
                "torch-fidelity: `pip install torch-fidelity==0.4.0` (an optional dependency)"
            )

        self.net = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(weights))
        self.num_features = 2048

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:  # grayscale -> RGB, as Inception expects 3 channels
            x = x.expand(-1, 3, -1, -1)
        # The torch-fidelity network takes uint8 in [0, 255].
        return self.net(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))


def find_inception_weights(path: str | Path | None = None) -> Path:
    """Locate the Inception-v3 FID weights on disk; never downloads.

    Looks at ``path``, then ``$RECTIFLOW_INCEPTION_WEIGHTS``, then torch hub's checkpoint cache.

    Raises:
        FileNotFoundError: naming the file and how to get it.
    """
    candidates = [Path(path)] if path is not None else []
    if os.environ.get(INCEPTION_ENV):
        candidates.append(Path(os.environ[INCEPTION_ENV]))
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS)
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"Inception FID weights {INCEPTION_WEIGHTS} not found (looked at "
        f"{', '.join(map(str, candidates))}). Download {INCEPTION_URL} on a machine with internet, "
        f"copy it here and pass its path or set ${INCEPTION_ENV}; also `pip install "
        "torch-fidelity==0.4.0`. Nothing is downloaded at run time."
    )


class FrechetEvaluator:
    """Scores image batches against fixed held-out real images.

    Args:
        classifier: a trained :class:`DigitClassifier`; its features define the distance (unless
            ``use_inception``) and its predictions the class accuracy; None only with Inception.
        real: (N, C, H, W) held-out real images in [-1, 1], N >= 2.
        batch_size: images per feature-extraction batch.
        inception_weights: use Inception-v3 pool features instead (CIFAR-10); path to
            ``weights-inception-2015-12-05-6726825d.pth`` or None to look it up, see
            :func:`find_inception_weights`. Only read when ``use_inception`` is True.
        use_inception: Inception-FID instead of classifier features.
    """

    def __init__(
        self,
        classifier: DigitClassifier | None,
        real: Tensor,
        batch_size: int = 500,
        inception_weights: str | Path | None = None,
        use_inception: bool = False,
    ):
        if classifier is None and not use_inception:
            raise ValueError("classifier is required unless use_inception=True")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        shape = classifier.in_shape if classifier is not None else None
        check_images(real, "real", shape)
        if len(real) < 2:
            raise ValueError(f"real needs at least 2 images, got {len(real)}")
        self.classifier = classifier
        self.image_shape = tuple(real.shape[1:])
        self.batch_size = batch_size
        self.n_real = len(real)
        if use_inception:
            feature: nn.Module = _InceptionFeatures(find_inception_weights(inception_weights))
        else:
            feature = _ClassifierFeatures(classifier)
        # Imported here: torchmetrics takes seconds to import and toy-only runs never need it.
        from torchmetrics.image.fid import FrechetInceptionDistance

        # reset_real_features=False keeps the real statistics across reset(); normalize=True
        # means "float input" for a custom extractor.
        self._fid = FrechetInceptionDistance(
            feature=feature, reset_real_features=False, normalize=True
        )
        self._update(real, real=True)

    def _update(self, images: Tensor, real: bool) -> None:
        for i in range(0, len(images), self.batch_size):
            self._fid.update(images[i : i + self.batch_size], real=real)

    def frechet(self, images: Tensor) -> float:
        """Fréchet distance between the feature Gaussians of ``images`` and the real images.

        Args:
            images: (M, C, H, W) in [-1, 1], M >= 2 (clamp generated samples first).

        Returns:
            The distance (>= 0 up to round-off; lower is better). Deterministic for fixed inputs.
        """
        check_images(images, "images", self.image_shape)
        if len(images) < 2:
            raise ValueError(f"images needs at least 2 images, got {len(images)}")
        self._fid.reset()  # clears the fake statistics only
        self._update(images, real=False)
        return float(self._fid.compute())

    def class_accuracy(self, images: Tensor, y: Tensor) -> float:
        """Fraction of conditional samples the classifier assigns to their conditioning label.

        Args:
            images: (M, C, H, W) in [-1, 1].
            y: (M,) int64 labels in [0, num_classes).
        """
        if self.classifier is None:
            raise ValueError("class_accuracy needs a classifier; this evaluator has none")
        check_images(images, "images", self.image_shape)
        n_cls = self.classifier.num_classes
        if y.shape != (len(images),) or y.dtype != torch.int64:
            got = f"{y.dtype} {tuple(y.shape)}"
            raise ValueError(f"y must be int64 of shape ({len(images)},), got {got}")
        if int(y.min()) < 0 or int(y.max()) >= n_cls:
            raise ValueError(f"y must hold labels in [0, {n_cls}) (not -1: unconditional samples)")
        return float((predict(self.classifier, images, self.batch_size) == y.cpu()).float().mean())
