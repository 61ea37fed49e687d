"""Pair sets as MLflow datasets, and the lineage queries that follow them.

A pair set is a metadata-only dataset named by its store URI and carrying the store digest:
context "generated" on the run that wrote it, "training" on the runs that trained on it. MLflow
has no dataset-output API, so "produced by" is that convention.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from storage.tracking.tags import (
    CONTEXT_GENERATED,
    CONTEXT_TRAINING,
    DIGEST_CHARS,
    TAG_DATA_KIND,
    TAG_DIGEST,
    TAG_PAIR_SEED,
    TAG_SOURCE,
    TAG_STAGE,
)


@dataclass(frozen=True)
class PairSetRef:
    """A pair set as MLflow knows it: store URI, digest, the run that logged it, and the noise
    seed of its pairs (when the generation run recorded it)."""

    uri: str
    name: str
    digest: str
    run_id: str
    seed: int | None = None


def pair_set_name(uri: str) -> str:
    """The dataset name of a pair store: its folder name (``.../tiny-1rf-m-1.zarr`` ->
    ``tiny-1rf-m-1.zarr``)."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def pair_set_key(uri: str, store_digest: str) -> tuple[str, str]:
    """(name, MLflow digest) of a pair store's dataset: what metrics measured on it carry."""
    return pair_set_name(uri), dataset_digest(store_digest)


def dataset_digest(store_digest: str) -> str:
    """MLflow caps dataset digests at 36 characters: use the first 32 hex digits (128 bits) of the
    store's sha256 digest; the full digest is kept in the input's ``rectiflow.digest`` tag."""
    return store_digest[:DIGEST_CHARS]


def log_pair_set(uri: str, name: str, digest: str, context: str) -> None:
    """Log a pair store as a metadata-only dataset input of the active run.

    Args:
        uri: the store's URI (the dataset source).
        name: dataset name (the store's folder name).
        digest: the store's full digest.
        context: "generated" (the run wrote it) or "training" (the run trained on it).
    """
    with warnings.catch_warnings():  # local paths match two equivalent source types
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(uri)
    ds = MetaDataset(source=source, name=name, digest=dataset_digest(digest))
    mlflow.log_input(ds, context=context, tags={TAG_DIGEST: digest})


def _dataset_runs(digest: str, context: str) -> list[Any]:
    digest = dataset_digest(digest)
    runs = mlflow.search_runs(
        filter_string=f"dataset.digest = '{digest}'",
        search_all_experiments=True,
        output_format="list",
    )
    # search_runs leaves model inputs out: fetch each matching run whole.
    return [
        mlflow.get_run(r.info.run_id)
        for r in runs
        if any(
            d.dataset.digest == digest
            and any(t.key == "mlflow.data.context" and t.value == context for t in d.tags)
            for d in r.inputs.dataset_inputs
        )
    ]


def source_uri(source_json: str) -> str:
    """The URI inside an MLflow dataset source's JSON (the JSON itself when it holds none)."""
    return json.loads(source_json).get("uri", source_json)


def pair_sets_from_model(model_id: str) -> list[PairSetRef]:
    """Pair sets generated from ``model_id``: runs that consumed it and logged "generated" sets."""
    out = []
    runs = mlflow.search_runs(
        filter_string=f"tags.`{TAG_STAGE}` = 'generate_pairs' "
        f"and tags.`{TAG_SOURCE}` = 'models:/{model_id}' and attributes.status = 'FINISHED'",
        search_all_experiments=True,
        output_format="list",
    )
    for r in (mlflow.get_run(r.info.run_id) for r in runs):  # search leaves model inputs out
        if any(m.model_id == model_id for m in r.inputs.model_inputs):
            for d in r.inputs.dataset_inputs:
                if any(t.value == CONTEXT_GENERATED for t in d.tags):
                    uri, seed = source_uri(d.dataset.source), r.data.tags.get(TAG_PAIR_SEED)
                    seed = int(seed) if seed is not None else None
                    ref = PairSetRef(uri, d.dataset.name, d.dataset.digest, r.info.run_id, seed)
                    out.append(ref)
    return list({p.digest: p for p in out}.values())


def models_trained_on(digest: str) -> list[str]:
    """Ids of the models output by runs that trained on the pair set with ``digest`` (full store
    digest or its MLflow prefix)."""
    ids = [
        m.model_id for r in _dataset_runs(digest, CONTEXT_TRAINING) for m in r.outputs.model_outputs
    ]
    return list(dict.fromkeys(ids))


def training_inputs(model_id: str) -> tuple[list[str], list[PairSetRef]]:
    """(model inputs, training pair sets) of the run that produced ``model_id``."""
    run = mlflow.get_run(mlflow.get_logged_model(model_id).source_run_id)
    sets = [
        PairSetRef(source_uri(d.dataset.source), d.dataset.name, d.dataset.digest, run.info.run_id)
        for d in run.inputs.dataset_inputs
        if any(t.value == CONTEXT_TRAINING for t in d.tags)
        and not any(t.key == TAG_DATA_KIND for t in d.tags)  # an on-disk set, no pair set
    ]
    return [m.model_id for m in run.inputs.model_inputs], sets


def pair_set_source(digest: str) -> str | None:
    """Id of the model the pair set with ``digest`` was generated from, if MLflow knows it."""
    for run in _dataset_runs(digest, CONTEXT_GENERATED):
        if run.inputs.model_inputs:
            return run.inputs.model_inputs[0].model_id
    return None


def pair_set_run(digest: str) -> str | None:
    """Id of the (first) run that generated the pair set with ``digest``, if MLflow knows it."""
    runs = _dataset_runs(digest, CONTEXT_GENERATED)
    return runs[0].info.run_id if runs else None
