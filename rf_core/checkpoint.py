"""State_dict checkpoints of trained models: what lineage, generation and evaluation load.

A checkpoint is a ``torch.save`` of plain data only, so it loads with ``weights_only=True``::

    {"format": "rectiflow-ckpt/1", "model_config": {...}, "state_dict": {...},
     "train_config": {...} | None, "extra": {...}}
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import nn
from torch.optim.swa_utils import AveragedModel

from rf_core.config import ModelConfig, TrainConfig
from rf_core.models import build_model

CKPT_FORMAT = "rectiflow-ckpt/1"


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    train_cfg: TrainConfig | None = None,
    extra: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a weights-only checkpoint atomically (temp file + rename).

    Args:
        path: destination file; parent folders are created.
        model: velocity field with ``.config`` (an AveragedModel is unwrapped).
        train_cfg: training settings to record.
        extra: JSON-serialisable metadata (e.g. k, pair-store URI).
        overwrite: replace an existing file (refused by default).

    Returns:
        The path written.
    """
    path = Path(path)
    if isinstance(model, AveragedModel):
        model = model.module
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    extra = dict(extra or {})
    try:
        json.dumps(extra)
    except TypeError as e:
        raise ValueError(f"extra must be JSON-serialisable (weights_only loading): {e}") from e
    payload = {
        "format": CKPT_FORMAT,
        "model_config": model.config.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train_config": train_cfg.model_dump(mode="json") if train_cfg is not None else None,
        "extra": extra,
    }
    return save_atomically(payload, path)


def save_atomically(payload: object, path: str | Path) -> Path:
    """``torch.save`` to a temp file beside ``path``, then rename it over ``path``: readers see
    the old file or the whole new one, never a half-written one. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    expected_config: ModelConfig | None = None,
) -> tuple[nn.Module, dict]:
    """Load a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``).

    Args:
        path: checkpoint file.
        map_location: device for the tensors and the model.
        expected_config: when given, refuse a checkpoint of another architecture.

    Returns:
        (model in eval mode with ``.config``, the full payload dict).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file, when it is truncated/corrupt, not a rectiflow checkpoint, or
            of another architecture than ``expected_config``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError/EOFError/UnpicklingError for bad files
        # torch's own text is pages of advice about weights_only: the cause stays chained.
        raise ValueError(
            f"checkpoint {path} is unreadable: not a checkpoint file, or truncated or corrupt "
            f"({type(e).__name__})"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != CKPT_FORMAT:
        raise ValueError(f"checkpoint {path} is not a {CKPT_FORMAT} file")
    try:
        cfg = ModelConfig.model_validate(payload["model_config"])
    except (KeyError, ValidationError) as e:
        raise ValueError(f"checkpoint {path} has an invalid model_config: {e}") from e
    if expected_config is not None and cfg != expected_config:
        raise ValueError(
            f"checkpoint {path} holds another architecture: stored {cfg!r}, "
            f"expected {expected_config!r}"
        )
    model = build_model(cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise ValueError(f"checkpoint {path}: state_dict does not match {cfg!r}: {e}") from e
    return model.to(map_location).eval(), payload


def checkpoint_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a checkpoint file's bytes (identifies the exact weights in lineage)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def clone_model(model: nn.Module) -> nn.Module:
    """Deep copy of a model (e.g. to initialise k+1-RF from k-RF without a file)."""
    return copy.deepcopy(model)
