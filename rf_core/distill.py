"""One-step distillation ("+distill" of Liu et al., Rectified Flow, 2022).

After k reflows the ODE is nearly straight, so one Euler step ``x0 + v(x0, 0)`` is almost the
endpoint. Distillation makes it exact on the reflow pairs ``(x0, x1 = ODE_k(x0))``: it starts from
the k-RF weights and minimises ``||x0 + v(x0, 0) - x1||^2``, i.e. the flow-matching loss with
``t ≡ 0``. Only the 1-step sampler of the result is meaningful afterwards: the field at ``t > 0``
is no longer trained.

Like reflow, distillation is not a new model or loop: it is :func:`rf_core.training.fit` with the
``zero`` time sampler, on a copy of the teacher.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from rf_core.config import TrainConfig
from rf_core.losses import rf_loss
from rf_core.training import Batch, FitResult, fit


def distill_loss(
    model: nn.Module, x0: Tensor, x1: Tensor, y: Tensor | None, kind: str = "mse"
) -> Tensor:
    """1-step objective: ``model(x0, 0, y)`` regressed on ``x1 - x0``.

    Args:
        model: velocity field with ``.config``.
        x0: (B, *shape) noise.
        x1: (B, *shape) reflow endpoints of x0 under the teacher.
        y: (B,) int64 labels (-1 = unconditional) or None.
        kind: ``mse`` or ``pseudo_huber``, as in :func:`rf_core.losses.rf_loss`.

    Returns:
        Scalar loss; for ``mse`` it equals ``mean((x0 + v(x0, 0) - x1)^2)``.
    """
    t = torch.zeros(x0.shape[0], device=x0.device)
    return rf_loss(model, x0, x1, y, t, kind=kind)


def distill(
    teacher: nn.Module,
    batches: Iterable[Batch] | Callable[[int], Batch],
    cfg: TrainConfig,
    device: str | torch.device = "cpu",
    callback: Callable[[int, float], None] | None = None,
    **options: Any,
) -> FitResult:
    """Train a 1-step student initialised from ``teacher`` (the k-RF model) on reflow pairs.

    Args:
        teacher: the k-RF velocity field; left unchanged (a deep copy is trained).
        batches: iterable of ``(x0, x1, y)`` reflow pairs (restarted when exhausted) or a
            callable ``step -> (x0, x1, y)``.
        cfg: optimiser settings; ``steps``, ``lr``, ``weight_decay``, ``ema_decay``,
            ``grad_clip``, ``loss`` and ``log_every`` are used; ``t_sampler`` is forced to ``zero``.
        device: where to train.
        callback: called as ``callback(step, mean_loss)`` every ``cfg.log_every`` steps.
        **options: passed on to :func:`rf_core.training.fit` (``resume``, ``save``, ``world``).

    Returns:
        FitResult whose ``model`` (EMA if enabled, eval mode) is the distilled student.

    Raises:
        ValueError: if ``batches`` runs out on its first pass.
        FloatingPointError: when the loss becomes NaN or Inf.
    """
    student = copy.deepcopy(teacher)
    cfg = cfg.model_copy(update={"t_sampler": "zero"})
    return fit(student, batches, cfg, device, callback, **options)
