"""Training data read from disk (an image folder, an npz file) as MLflow datasets.

Like a pair set, an on-disk set is a metadata-only dataset input of the run that trained on it
(context "training"), carrying its digest; the tag ``rectiflow.data_kind`` tells it from a pair
set, and the run records the set's class names (a tag, and all of them in ``dataset.json``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from storage.tracking.pairsets import source_uri
from storage.tracking.tags import (
    CONTEXT_TRAINING,
    DIGEST_CHARS,
    TAG_CLASSES,
    TAG_DATA_KIND,
    TAG_DIGEST,
)

TAG_LIMIT = 5000  # MLflow's cap on a tag value


@dataclass(frozen=True)
class TrainingData:
    """An on-disk training set as MLflow knows it."""

    uri: str
    name: str
    digest: str
    kind: str
    run_id: str


def log_training_data(path: str, digest: str, kind: str, n: int, classes: tuple[str, ...]) -> None:
    """Log an on-disk set as a "training" dataset input of the active run, with its classes.

    Args:
        path: the folder or npz file (the dataset source).
        digest: the set's full sha256 digest (rf_core.datasets).
        kind: ``folder`` or ``npz``.
        n: number of samples.
        classes: class names, () without labels.
    """
    with warnings.catch_warnings():  # local paths match two equivalent source types
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(path)
    ds = MetaDataset(source=source, name=Path(path).name, digest=digest[:DIGEST_CHARS])
    tags = {TAG_DIGEST: digest, TAG_DATA_KIND: kind}
    mlflow.log_input(ds, context=CONTEXT_TRAINING, tags=tags)
    names = ", ".join(classes)
    mlflow.set_tag(TAG_CLASSES, names if len(names) <= TAG_LIMIT else names[: TAG_LIMIT - 1] + "…")
    info = {"kind": kind, "path": path, "digest": digest, "n": n, "classes": list(classes)}
    mlflow.log_dict(info, "dataset.json")


def training_data(model_id: str) -> list[TrainingData]:
    """The on-disk sets the run that produced ``model_id`` trained on."""
    run = mlflow.get_run(mlflow.get_logged_model(model_id).source_run_id)
    out = []
    for d in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in d.tags}
        if TAG_DATA_KIND in tags and tags.get("mlflow.data.context") == CONTEXT_TRAINING:
            uri = source_uri(d.dataset.source)
            kind = tags[TAG_DATA_KIND]
            out.append(TrainingData(uri, d.dataset.name, d.dataset.digest, kind, run.info.run_id))
    return out
