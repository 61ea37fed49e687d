"""Helpers shared by the stage flows: devices, tracking setup, stage keys, run links."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from prefect.artifacts import create_link_artifact
from prefect.runtime import flow_run

from flows.config import PipelineConfig
from storage import tracking
from tasks.progress import artifact_key


def devices(cfg: PipelineConfig) -> list[str]:
    """Devices to fan generation out to: every CUDA device under "auto", else the CPU."""
    if cfg.devices != "auto":
        return list(cfg.devices)
    n = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(n)] if n else ["cpu"]


def train_device(cfg: PipelineConfig) -> str:
    return devices(cfg)[0]


def setup_tracking(cfg: PipelineConfig) -> str:
    """Configure MLflow (``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else the runs folder's
    SQLite DB); returns the experiment id. Fails fast if a tracking server does not answer."""
    tracking.configure(cfg.runs_dir, cfg.tracking.uri)
    return tracking.ensure_experiment(cfg.experiment, cfg.runs_dir)


def current_flow_run_id() -> str:
    return str(flow_run.id or "")


def stage_key(*parts: Any) -> str:
    """A short digest of everything that determines a stage's output (for reuse across runs)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def link_run(experiment_id: str, run_id: str, stage: str) -> None:
    """A Prefect link artifact pointing at the stage's MLflow run."""
    create_link_artifact(
        tracking.run_url(experiment_id, run_id),
        link_text=f"MLflow run {run_id} ({stage})",
        key=artifact_key("mlflow", stage),
        description="MLflow run of this stage (start the UI with the command the CLI prints)",
    )


def checkpoint_dir(cfg: PipelineConfig) -> Path:
    path = cfg.runs / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def store_uri(cfg: PipelineConfig, model: tracking.ModelRef) -> str:
    """Default store of pairs generated from ``model``: one store per source model, so re-running
    with the same model resumes it and a different model never collides with it."""
    tag = model.model_id or model.checkpoint_sha256[:16]
    root = cfg.pairs.store_root or str(cfg.runs / "stores")
    return f"{root.rstrip('/')}/{cfg.experiment}-{model.k}rf-{tag}.zarr"


def apply_storage_options(cfg: PipelineConfig) -> None:
    """Register ``pairs.storage_options`` for every store URL of their protocols (here and in
    the processes started afterwards: generation workers, DataLoader workers).

    Raises:
        ValueError: naming ``pairs.storage_options`` when the options cannot be used.
    """
    from storage.location import set_storage_options
    from storage.pairstore import PairStoreError

    for protocol, options in cfg.pairs.storage_options.items():
        try:
            set_storage_options(protocol, options)
        except PairStoreError as e:
            raise ValueError(f"pairs.storage_options: {e}") from None


def resolve_model_arg(ref: str, field: str = "model") -> tracking.ModelRef:
    """A model given as a checkpoint file, an MLflow model id or a models:/ URI.

    Raises:
        ValueError: naming ``field`` when the reference resolves to nothing.
    """
    from rf_core.training import checkpoint_sha256, load_checkpoint

    if ref.startswith(("models:/", "m-")):
        return tracking.resolve_model(ref, field)
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ValueError(
            f"{field}: {ref!r} is neither an MLflow model (m-<id>, models:/<name>/<version>) "
            "nor an existing checkpoint file"
        )
    try:
        _, payload = load_checkpoint(path)
    except ValueError as e:
        raise ValueError(f"{field}: {e}") from None
    extra = payload.get("extra") or {}
    k, distilled = int(extra.get("k", 1)), bool(extra.get("distilled", False))
    return tracking.ModelRef(
        None, str(path.resolve()), checkpoint_sha256(path), k, None, None, distilled
    )


def reuse_stage(experiment_id: str, stage: str, key: str) -> tracking.ModelRef | None:
    """The model of an earlier FINISHED run of the same stage and key, if any."""
    run_id = tracking.find_finished_stage(experiment_id, stage, key)
    return tracking.run_output_model(run_id) if run_id else None
