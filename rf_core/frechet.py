"""Fréchet distance, precision and recall of generated images against held-out real images.

Images are mapped to features once — for digits the multi-scale features of a
:class:`~rf_core.classifier.DigitClassifier`, for RGB sets torch-fidelity's Inception-v3 pool
features (the standard FID; its weights file must be on disk: nothing is downloaded) — and scored on
them: the Fréchet distance between the two feature Gaussians is torchmetrics'
``FrechetInceptionDistance`` (float64 statistics) fed the features; improved precision and recall
(Kynkäänniemi et al. 2019) are :func:`precision_recall`. A sample counts as "precise" when it falls
inside the k-nearest-neighbour ball of some real image, a real image as "recalled" when it falls
inside the ball of some sample (k = 3): precision sees fidelity, recall diversity. (torch-fidelity
computes the same, but its 0.4.0 wheel installs a top-level ``tests`` package that shadows this
repository's; prdc prints on every call.) The real features and statistics are computed once per
evaluator and kept across calls. torchmetrics is imported lazily (it takes seconds), so 2-D toy
evaluations never load it.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from rf_core.classifier import DigitClassifier, check_images, features, predict

INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_WEIGHTS}"
)
INCEPTION_ENV = "RECTIFLOW_INCEPTION_WEIGHTS"
PR_NEIGHBOURHOOD = 3  # k of the k-NN manifolds (the paper's and torch-fidelity's default)


@dataclass(frozen=True)
class FeatureScores:
    """Scores of one batch of images in the evaluator's feature space.

    Attributes:
        fd: Fréchet distance to the real images (lower is better).
        precision: fraction of images inside the real images' k-NN manifold (higher is better).
        recall: fraction of real images inside the images' k-NN manifold (higher is better).
    """

    fd: float
    precision: float
    recall: float


def precision_recall(fake: Tensor, real: Tensor, k: int = PR_NEIGHBOURHOOD) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of two feature sets.

    Each set's manifold is the union of balls around its points, each with the radius of the
    point's k-th nearest neighbour in its own set.

    Args:
        fake: (M, D) features of generated images, M > k.
        real: (N, D) features of real images, N > k.
        k: neighbourhood size.

    Returns:
        (precision: fraction of ``fake`` inside the real manifold, recall: fraction of ``real``
        inside the fake manifold).
    """
    fake, real = fake.double(), real.double()
    # kthvalue(k + 1): the 0th "neighbour" of each point is itself, at distance 0.
    r_real = torch.cdist(real, real).kthvalue(k + 1, dim=1).values  # (N,)
    r_fake = torch.cdist(fake, fake).kthvalue(k + 1, dim=1).values  # (M,)
    d = torch.cdist(fake, real)  # (M, N)
    precision = (d <= r_real[None, :]).any(1).double().mean()
    recall = (d <= r_fake[:, None]).any(0).double().mean()
    return float(precision), float(recall)


class _Precomputed(nn.Module):
    """Identity "feature extractor": lets torchmetrics' FID take features computed here."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, feats: Tensor) -> Tensor:
        return feats


class _InceptionFeatures(nn.Module):
    """Adapter: [-1, 1] float images -> 2048-d Inception pool features (torchmetrics' wrapper).

    The network is torch-fidelity's Inception-v3 with its TF1-compatible bilinear resize to 299
    (``antialias=False``), the standard FID's; images are quantised to uint8 first, as when
    samples are saved as PNG files.
    """

    def __init__(self, weights: Path):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3  # torch-fidelity's network

        try:
            self.net = NoTrainInceptionV3(
                "inception-v3-compat", ["2048"], str(weights), antialias=False
            )
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
            raise ValueError(
                f"Inception weights file {weights} is not {INCEPTION_WEIGHTS} ({e}); fetch "
                f"{INCEPTION_URL} again"
            ) from None
        self.num_features = 2048

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:  # grayscale -> RGB, as Inception expects 3 channels
            x = x.expand(-1, 3, -1, -1)
        return self.net(to_uint8(x).to(next(self.net.parameters()).device))


def to_uint8(x: Tensor) -> Tensor:
    """[-1, 1] float images -> uint8 in [0, 255] (rounded, clamped): the Inception input."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


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
        f"copy it here and pass its path or set ${INCEPTION_ENV}. Nothing is downloaded at run "
        "time."
    )


class FrechetEvaluator:
    """Scores image batches against fixed held-out real images.

    Args:
        classifier: a trained :class:`DigitClassifier`; its features define the metrics (unless
            ``use_inception``) and its predictions the class accuracy; None only with Inception.
        real: (N, C, H, W) held-out real images in [-1, 1], N > ``PR_NEIGHBOURHOOD``.
        batch_size: images per feature-extraction batch.
        inception_weights: use Inception-v3 pool features instead (RGB sets); path to
            ``weights-inception-2015-12-05-6726825d.pth`` or None to look it up, see
            :func:`find_inception_weights`. Only read when ``use_inception`` is True.
        use_inception: Inception features instead of classifier features.
        device: where the Inception network runs (its features come back to the CPU; the
            classifier stays where it is).
    """

    def __init__(
        self,
        classifier: DigitClassifier | None,
        real: Tensor,
        batch_size: int = 500,
        inception_weights: str | Path | None = None,
        use_inception: bool = False,
        device: str | torch.device = "cpu",
    ):
        if classifier is None and not use_inception:
            raise ValueError("classifier is required unless use_inception=True")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        shape = classifier.in_shape if classifier is not None else None
        check_images(real, "real", shape)
        if len(real) <= PR_NEIGHBOURHOOD:
            raise ValueError(f"real needs at least {PR_NEIGHBOURHOOD + 1} images, got {len(real)}")
        self.classifier = classifier
        self.image_shape = tuple(real.shape[1:])
        self.batch_size = batch_size
        self.n_real = len(real)
        self._inception = None
        if use_inception:
            weights = find_inception_weights(inception_weights)
            self._inception = _InceptionFeatures(weights).to(device)
        self._real = self.features(real)
        # Imported here: torchmetrics takes seconds to import and toy-only runs never need it.
        from torchmetrics.image.fid import FrechetInceptionDistance

        # reset_real_features=False keeps the real statistics across reset().
        self._fid = FrechetInceptionDistance(
            feature=_Precomputed(self._real.shape[1]), reset_real_features=False
        )
        self._fid.update(self._real, real=True)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """(M, C, H, W) images in [-1, 1] -> (M, D) float64 features on the CPU."""
        if self._inception is None:
            return features(self.classifier, images, self.batch_size).double()
        out = [self._inception(b).cpu() for b in images.split(self.batch_size)]
        return torch.cat(out).double()

    def score(self, images: Tensor) -> FeatureScores:
        """Fréchet distance, precision and recall of ``images`` (one feature pass).

        Args:
            images: (M, C, H, W) in [-1, 1], M > ``PR_NEIGHBOURHOOD`` (clamp generated samples
                first). Compare models on the same M: both metrics depend on it.

        Returns:
            :class:`FeatureScores`; deterministic for fixed inputs.
        """
        feats = self._features_of(images)
        return FeatureScores(self._frechet(feats), *precision_recall(feats, self._real))

    def frechet(self, images: Tensor) -> float:
        """Fréchet distance between the feature Gaussians of ``images`` and the real images.

        Args:
            images: (M, C, H, W) in [-1, 1], M > ``PR_NEIGHBOURHOOD``.

        Returns:
            The distance (>= 0 up to round-off; lower is better). Deterministic for fixed inputs.
        """
        return self._frechet(self._features_of(images))

    def _features_of(self, images: Tensor) -> Tensor:
        check_images(images, "images", self.image_shape)
        if len(images) <= PR_NEIGHBOURHOOD:
            n = PR_NEIGHBOURHOOD + 1
            raise ValueError(f"images needs at least {n} images, got {len(images)}")
        return self.features(images)

    def _frechet(self, feats: Tensor) -> float:
        self._fid.reset()  # clears the fake statistics only
        self._fid.update(feats, real=False)
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
