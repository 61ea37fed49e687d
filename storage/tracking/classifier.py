"""The Fréchet-distance classifier of an image dataset, registered once as
``<dataset>-classifier`` and found again by its training-data digest; each evaluation run is
tagged with the version it used."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.pytorch
from mlflow.exceptions import MlflowException
from torch import nn

from storage.tracking.models import checkpoint_path
from storage.tracking.tags import (
    CLASSIFIER_NAME,
    TAG_CLF_DATA,
    TAG_CLF_KEY,
    TAG_CLF_MODEL,
    TAG_CLF_VERSION,
)


@dataclass(frozen=True)
class ClassifierRef:
    """The Fréchet-distance classifier of a dataset as registered in MLflow.

    Attributes:
        model_id: its LoggedModel id.
        registered: "<dataset>-classifier/<version>".
        checkpoint: local path of its rf_core.classifier checkpoint.
    """

    model_id: str
    registered: str
    checkpoint: str


def classifier_name(dataset: str) -> str:
    return f"{dataset}-classifier"


def find_classifier(dataset: str, key: str) -> ClassifierRef | None:
    """The registered classifier of ``dataset`` trained with key ``key`` (same training data
    digest and settings), from any experiment; None if there is none yet."""
    name = classifier_name(dataset)
    versions = mlflow.MlflowClient().search_model_versions(f"name = '{name}'")
    for mv in sorted(versions, key=lambda v: int(v.version)):  # the oldest stays the reference
        model_id = mv.model_id or mv.source.removeprefix("models:/")
        try:
            lm = mlflow.get_logged_model(model_id)
        except MlflowException:  # deleted since
            continue
        if lm.tags.get(TAG_CLF_KEY) == key:
            path = checkpoint_path(model_id, CLASSIFIER_NAME)
            return ClassifierRef(model_id, f"{name}/{mv.version}", path)
    return None


def log_classifier(
    clf: nn.Module, checkpoint: str | Path, dataset: str, key: str, data_digest: str
) -> ClassifierRef:
    """Log a trained classifier as an output of the active run, registered ``<dataset>-classifier``.

    Args:
        clf: the rf_core.classifier.DigitClassifier (logged with pickle for the UI).
        checkpoint: its rf_core checkpoint (what :func:`find_classifier` hands back).
        dataset: dataset it was trained on.
        key: lookup key (data digest + training settings).
        data_digest: sha256 of its training images and labels.
    """
    name = classifier_name(dataset)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / CLASSIFIER_NAME
        shutil.copyfile(checkpoint, staged)
        info = mlflow.pytorch.log_model(
            clf.eval(),
            name=name,
            serialization_format="pickle",
            extra_files=[str(staged)],
            registered_model_name=name,
            pip_requirements=[],
            tags={TAG_CLF_KEY: key, TAG_CLF_DATA: data_digest, "rectiflow.dataset": dataset},
        )
    version = info.registered_model_version
    return ClassifierRef(
        info.model_id, f"{name}/{version}", checkpoint_path(info.model_id, CLASSIFIER_NAME)
    )


def tag_classifier(ref: ClassifierRef) -> None:
    """Record on the active (evaluation) run which classifier version scored it."""
    mlflow.set_tags({TAG_CLF_MODEL: ref.model_id, TAG_CLF_VERSION: ref.registered})
