"""Plain training loop (AdamW + EMA), couplings, and state_dict checkpoints.

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rf_core.config import ModelConfig, TrainConfig
from rf_core.guidance import with_label_dropout
from rf_core.losses import rf_loss
from rf_core.models import build_model
from rf_core.timesteps import sample_t

CKPT_FORMAT = "rectiflow-ckpt/1"
Batch = tuple[Tensor, Tensor, Tensor]


@dataclass
class FitResult:
    """Result of :func:`fit`.

    Attributes:
        model: the EMA model (or the trained model itself when ``ema_decay == 0``), in eval mode.
        losses: training loss of every step.
        steps: optimizer steps taken.
        raw_model: the trained (non-averaged) model.
    """

    model: nn.Module
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    raw_model: nn.Module | None = None


# ---------------------------------------------------------------------------------------------
# couplings


def independent_coupling(x1: Tensor, y: Tensor, generator: torch.Generator) -> Batch:
    """1-RF coupling: pair each data point with fresh Gaussian noise.

    Args:
        x1: (B, *shape) data.
        y: (B,) labels.
        generator: RNG for the noise (on x1's device).

    Returns:
        (x0, x1, y) with x0 ~ N(0, I) of x1's shape.
    """
    x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
    return x0, x1, y


def minibatches(
    tensors: tuple[Tensor, ...], batch_size: int, generator: torch.Generator
) -> Iterator[tuple[Tensor, ...]]:
    """Endless shuffled minibatches of tensors sharing dim 0 (reshuffled every epoch)."""
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"tensors disagree on length: {[t.shape[0] for t in tensors]}")
    if not 0 < batch_size <= n:
        raise ValueError(f"batch_size must be in 1..{n} (the data size), got {batch_size}")
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size].to(tensors[0].device)
            yield tuple(t[idx] for t in tensors)


def independent_batches(
    x1: Tensor, y: Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[Batch]:
    """Endless 1-RF batches: shuffled data minibatches, each paired with fresh noise."""
    for xb, yb in minibatches((x1, y), batch_size, generator):
        yield independent_coupling(xb, yb, generator)


# ---------------------------------------------------------------------------------------------
# training


def _batch_source(batches: Iterable[Batch] | Callable[[int], Batch]) -> Callable[[int], Batch]:
    """Turn an iterable (restarted when exhausted, like epochs) or a callable into step -> batch."""
    if callable(batches) and not hasattr(batches, "__iter__"):
        return batches
    state = {"it": iter(batches)}

    def get(step: int) -> Batch:
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(batches)
            if state["it"] is batches:  # a one-shot iterator cannot restart
                raise ValueError(f"batches ran out after {step} steps") from None
            return next(state["it"])

    return get


def fit(
    model: nn.Module,
    batches: Iterable[Batch] | Callable[[int], Batch],
    cfg: TrainConfig,
    device: str | torch.device = "cpu",
    callback: Callable[[int, float], None] | None = None,
    init_from: str | Path | None = None,
) -> FitResult:
    """Train a velocity field by flow matching on (x0, x1, y) batches.

    Args:
        model: velocity field with ``.config``; trained in place.
        batches: iterable of ``(x0, x1, y)`` (restarted when exhausted) or a callable
            ``step -> (x0, x1, y)``. The coupling of the pairs decides 1-RF vs reflow.
        cfg: optimisation settings.
        device: where to train.
        callback: called as ``callback(step, mean_loss)`` every ``cfg.log_every`` steps.
        init_from: checkpoint whose weights (same ModelConfig) initialise ``model`` first.

    Returns:
        FitResult with the EMA model (eval mode), per-step losses and the raw model.

    Raises:
        FloatingPointError: when the loss becomes NaN or Inf.
    """
    if init_from is not None:
        src, _ = load_checkpoint(init_from, expected_config=model.config)
        model.load_state_dict(src.state_dict())
    model.to(device).train()
    get_batch = _batch_source(batches)
    if cfg.label_dropout > 0:  # only then: a default config draws exactly what it did before
        get_batch = with_label_dropout(get_batch, cfg.label_dropout, cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = None
    if cfg.ema_decay > 0:
        avg_fn = get_ema_multi_avg_fn(cfg.ema_decay)
        ema = AveragedModel(model, multi_avg_fn=avg_fn, use_buffers=True)
    gen = torch.Generator().manual_seed(cfg.seed)  # times drawn on CPU: same on every device
    losses: list[Tensor] = []
    for step in range(cfg.steps):
        x0, x1, y = (b.to(device) for b in get_batch(step))
        t = sample_t(x0.shape[0], cfg.t_sampler, generator=gen).to(device)
        loss = rf_loss(model, x0, x1, y, t, kind=cfg.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if ema is not None:
            ema.update_parameters(model)
        losses.append(loss.detach())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            # Sync only here (not every step) so GPU training is not stalled by .item().
            recent = torch.stack(losses[-cfg.log_every :]).mean().item()
            if not torch.isfinite(torch.tensor(recent)):
                raise FloatingPointError(f"training loss is {recent} at step {step + 1}")
            if callback is not None:
                callback(step + 1, recent)
    final = ema.module if ema is not None else model
    return FitResult(
        model=final.eval(), losses=torch.stack(losses).tolist(), steps=cfg.steps, raw_model=model
    )


# ---------------------------------------------------------------------------------------------
# checkpoints


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
