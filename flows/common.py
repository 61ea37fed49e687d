"""Helpers shared by the stage flows: devices, and where checkpoints and stores go."""

from __future__ import annotations

from pathlib import Path

import torch

from flows.config import PipelineConfig
from storage import tracking


def devices(cfg: PipelineConfig) -> list[str]:
    """Devices to fan generation out to: every CUDA device under "auto", else the CPU."""
    if cfg.execution.devices != "auto":
        return list(cfg.execution.devices)
    n = torch.cuda.device_count()
    return [f"cuda:{i}" for i in range(n)] if n else ["cpu"]


def train_device(cfg: PipelineConfig) -> str:
    return devices(cfg)[0]


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
