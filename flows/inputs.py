"""Checks of a stage's arguments, done before any work.

The CLI runs them before it starts a flow, so bad input never reaches Prefect; each flow runs
them again at its start, because deployments call flows directly. Every check raises
:class:`~flows.errors.InputError`: one line naming the argument (``model:``, ``store:``,
``init_model:``, ``models[1]:``, ``data.path:``, ``evaluate.inception_weights:``) in the user's
words. Nothing here writes: stores are only looked at, models only resolved and loaded, a dataset
on disk only listed (its files are decoded when training starts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flows.common import store_uri
from flows.config import PipelineConfig
from flows.data_config import eval_metric
from flows.errors import InputError, bad_input
from flows.stores import existing_store, store_arg
from rf_core.datasets import DatasetIdentity
from rf_core.guidance import check_guidance, label_dropout_of
from rf_core.training import checkpoint_sha256, load_checkpoint
from storage import tracking
from storage.location import set_storage_options
from storage.solver_choice import open_or_create_pairs
from tasks.data import DataInput


def connect(cfg: PipelineConfig) -> None:
    """Register ``execution.storage_options`` (here and for the processes started later) and
    point MLflow at the config's tracking URI.

    Raises:
        InputError: naming ``execution.storage_options`` when the options cannot be used.
        TrackingServerError: a tracking server that does not answer (the CLI counts it as bad
            input: a setting that cannot work, found before any work).
    """
    for protocol, options in cfg.execution.storage_options.items():
        with bad_input("execution.storage_options"):
            set_storage_options(protocol, options)
    tracking.configure(cfg.runs_dir, cfg.tracking.uri)


def connect_runs(runs_dir: Path) -> None:
    """MLflow at ``MLFLOW_TRACKING_URI``, else the runs folder's database (read-only commands).

    Raises:
        InputError: naming ``--runs-dir`` when it holds no database and no URI is set, or the
            tracking server does not answer.
    """
    if not (runs_dir / "mlflow.db").is_file() and tracking.ENV_URI not in os.environ:
        raise InputError(
            f"--runs-dir: {runs_dir} holds no mlflow.db (and MLFLOW_TRACKING_URI is not set); "
            "pass the runs folder of a pipeline run"
        )
    with bad_input("tracking"):
        tracking.configure(runs_dir)


def model_arg(ref: str, field: str, cfg: PipelineConfig | None = None) -> tracking.ModelRef:
    """A model given as a checkpoint file, an MLflow model id or a models:/ URI; with ``cfg``,
    its checkpoint must also hold ``cfg.model``'s architecture."""
    with bad_input(field):
        if ref.startswith(("models:/", "m-")):
            model = tracking.resolve_model(ref, field)
        else:
            model = _checkpoint_ref(ref)
        if cfg is not None:  # also reads the file: an unreadable checkpoint fails here
            load_checkpoint(model.checkpoint, expected_config=cfg.model)
    return model


def check_guided(
    model: tracking.ModelRef, field: str, guidance: float, labels: torch.Tensor | None = None
) -> None:
    """Refuse, as an InputError naming ``field``, a model that cannot be sampled with
    ``guidance`` (and ``labels``; default: one of each class): see
    :func:`rf_core.guidance.check_guidance` (its checkpoint tells its train.label_dropout)."""
    with bad_input(field):
        net, payload = load_checkpoint(model.checkpoint)
        n = net.config.num_classes
        y = labels if labels is not None else torch.arange(n) if n else torch.full((1,), -1)
        check_guidance(n, label_dropout_of(payload), y, guidance, model.model_id or model.uri)


def _checkpoint_ref(ref: str) -> tracking.ModelRef:
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ValueError(
            f"{ref!r} is neither an MLflow model (m-<id>, models:/<name>/<version>) nor an "
            "existing checkpoint file"
        )
    _, payload = load_checkpoint(path)
    extra = payload.get("extra") or {}
    k, distilled = int(extra.get("k", 1)), bool(extra.get("distilled", False))
    return tracking.ModelRef(
        None, str(path.resolve()), checkpoint_sha256(path), k, None, None, distilled
    )


@dataclass(frozen=True)
class TrainingPairs:
    """A complete pair store to train on: its URI, digest and source model."""

    uri: str
    digest: str
    source: Mapping[str, Any]

    @property
    def k(self) -> int:
        """The k-RF that generated the pairs (training on them gives (k+1)-RF)."""
        return int(self.source.get("k") or 1)


@dataclass(frozen=True)
class TrainingInputs:
    """What reflow and distillation train on and start from."""

    pairs: TrainingPairs
    init: tracking.ModelRef | None


def training_pairs(uri: str) -> TrainingPairs:
    """A finished pair store for training, or an InputError naming ``store``."""
    store = store_arg(uri)
    if not store.is_finalized:
        raise InputError(
            f"store: pair store {uri} is not complete ({len(store.missing_chunks())} chunks "
            f"missing, or not finalized); finish it first: `rectiflow generate <config> --model "
            f"{store.source.get('model_id') or store.source.get('model_uri')} --store {uri}`"
        )
    return TrainingPairs(store.uri, store.attrs["digest"], store.source)


def reflow_inputs(cfg: PipelineConfig, store: str, init_model: str | None) -> TrainingInputs:
    """The store and init model of ``train_reflow``: by default (``reflow.init_from_previous``)
    the store's source model."""
    pairs = training_pairs(store)
    if init_model is None and cfg.reflow.init_from_previous:
        init_model = pairs.source.get("model_id") or pairs.source.get("model_uri")
    init = model_arg(init_model, "init_model", cfg) if init_model else None
    return TrainingInputs(pairs, init)


def distill_inputs(cfg: PipelineConfig, store: str, init_model: str) -> TrainingInputs:
    """The store and the k-RF teacher of ``distill`` (a distilled model cannot be a teacher)."""
    pairs = training_pairs(store)
    init = model_arg(init_model, "init_model", cfg)
    if init.distilled:
        raise InputError(f"init_model: {init_model!r} is already distilled; give the k-RF model")
    return TrainingInputs(pairs, init)


def evaluate_inputs(cfg: PipelineConfig, models: list[str]) -> list[tracking.ModelRef]:
    """The models of ``evaluate``, each of the config's architecture; the Inception weights
    when the config is scored with the Inception FID."""
    if not models:
        raise InputError("models: give at least one model to evaluate")
    refs = [model_arg(m, f"models[{i}]", cfg) for i, m in enumerate(models)]
    for i, ref in enumerate(refs):  # evaluate.guidance: every model is swept at every scale
        check_guided(ref, f"models[{i}]", max(cfg.evaluate.guidance))
    check_inception(cfg)
    return refs


def data_input(cfg: PipelineConfig) -> DataInput:
    """The training data as the tasks take it (``data:`` plus the pipeline seed)."""
    d = cfg.data
    return DataInput(
        d.dataset, d.n_train, d.root, cfg.seed, d.path, d.values, d.scale, d.shift, d.flip,
        d.workers,
    )  # fmt: skip


def base_inputs(cfg: PipelineConfig) -> DatasetIdentity | None:
    """The identity (digest, size, classes) of an on-disk training set that fits the model;
    None for the sets held in memory (toys, MNIST-5k, torchvision)."""
    if not cfg.data.on_disk:
        return None
    with bad_input("data.path"):  # DatasetError: the folder or file and what is wrong with it
        ident = data_input(cfg).open(cfg.model.data_shape).identity()
    k, classes = cfg.model.num_classes, ident.classes
    if k and len(classes) != k:
        have = f"{len(classes)} classes ({', '.join(classes[:10])})" if classes else "no labels"
        raise InputError(
            f"model.num_classes is {k} but {ident.path} has {have}; set it to "
            f"{len(classes)}, or to 0 to train unconditionally"
        )
    return ident


def check_inception(cfg: PipelineConfig) -> None:
    """When the config is scored with the Inception FID, its weights file must be on disk
    (an InputError naming ``evaluate.inception_weights``, where it looked and how to fetch the
    file: nothing is downloaded)."""
    if eval_metric(cfg.data, cfg.evaluate) != "inception":
        return
    from rf_core.frechet import find_inception_weights

    try:
        find_inception_weights(cfg.evaluate.inception_weights)
    except FileNotFoundError as e:
        raise InputError(f"evaluate.inception_weights: {e}") from None


def pipeline_inputs(cfg: PipelineConfig) -> None:
    """What the whole pipeline needs before its first stage: a run whose data does not fit the
    model, or that could not be scored, never starts."""
    base_inputs(cfg)
    check_inception(cfg)


@dataclass(frozen=True)
class GenerateInputs:
    """The source model of ``generate_pairs`` and the store it writes (or resumes)."""

    model: tracking.ModelRef
    uri: str


def store_args(cfg: PipelineConfig, model: tracking.ModelRef) -> dict[str, Any]:
    """Everything that makes a store's pairs what they are (``open_or_create_pairs`` kwargs)."""
    p = cfg.pairs
    return {
        "n": p.n, "chunk": p.chunk, "sample_shape": cfg.model.data_shape,
        "seed": p.round_seed(model.k), "source": model.source(), "solver": p.solver,
        "dataset": cfg.data.dataset, "num_classes": cfg.model.num_classes,
    }  # fmt: skip


def generate_inputs(cfg: PipelineConfig, model: str, store: str | None) -> GenerateInputs:
    """Resolve the model; check that ``store`` (default: one store per source model) is free or
    a store this run resumes: same source model, solver, seed, shape and size."""
    ref = model_arg(model, "model", cfg)
    check_guided(ref, "model", cfg.pairs.solver.guidance)
    uri = store or store_uri(cfg, ref)
    uri = uri if "://" in uri else str(Path(uri).expanduser().resolve())
    existing = existing_store(uri)
    if existing is not None:
        have = existing.source
        if have["checkpoint_sha256"] != ref.checkpoint_sha256:
            raise InputError(
                f"store: {uri} was generated from model {have['model_id'] or have['model_uri']} "
                f"(checkpoint {have['checkpoint_sha256'][:12]}), not from model "
                f"{ref.model_id or ref.checkpoint} ({ref.checkpoint_sha256[:12]}). "
                "Pass a new --store URI; nothing was changed."
            )
        with bad_input("store"):  # opens the existing store and compares; writes nothing
            open_or_create_pairs(uri, **store_args(cfg, ref))
    return GenerateInputs(ref, uri)


def check_dask(cfg: PipelineConfig) -> None:
    """With ``execution.task_runner: dask`` and an address: its scheduler answers, with workers."""
    if cfg.execution.task_runner == "dask" and cfg.execution.dask_address:
        from flows.dask_runner import probe  # distributed takes ~1 s to import

        probe(cfg.execution.dask_address, cfg.execution.dask_timeout_s)
