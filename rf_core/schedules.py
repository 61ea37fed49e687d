"""Learning-rate schedule and EMA of the weights, as :func:`rf_core.training.fit` uses them."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rf_core.config import TrainConfig


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` for optimizer step ``step`` (0-based).

    Linear warmup ``(step + 1) / warmup_steps`` over the first ``warmup_steps`` steps, then 1
    (``constant``) or a half cosine from 1 down to 0 at the last step (``cosine``).
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(cfg.steps - cfg.warmup_steps - 1, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - cfg.warmup_steps, span) / span))


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig) -> LambdaLR | None:
    """The schedule of ``cfg``, or None for a constant rate without warmup (the lr is then
    exactly ``cfg.lr`` at every step, as before schedules existed)."""
    if cfg.lr_schedule == "constant" and cfg.warmup_steps == 0:
        return None
    return LambdaLR(opt, lambda step: lr_factor(step, cfg))


def make_ema(model: nn.Module, cfg: TrainConfig) -> AveragedModel | None:
    """An EMA of ``model``'s weights and buffers (None when ``ema_decay == 0``).

    With ``ema_warmup`` the decay at update n is ``min(ema_decay, (1 + n) / (10 + n))``.
    """
    if cfg.ema_decay == 0:
        return None
    if not cfg.ema_warmup:
        return AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True
        )

    def warm(ema_params, params, num_averaged) -> None:
        n = float(num_averaged)
        get_ema_multi_avg_fn(min(cfg.ema_decay, (1 + n) / (10 + n)))(ema_params, params, None)

    return AveragedModel(model, multi_avg_fn=warm, use_buffers=True)
