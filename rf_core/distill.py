"""One-step distillation ("+distill" of Liu et al., Rectified Flow, 2022).

After k reflows the ODE is nearly straight, so one Euler step ``x0 + v(x0, 0)`` is almost the
endpoint. Distillation makes it exact on the reflow pairs ``(x0, x1 = ODE_k(x0))``: it starts from
the k-RF weights and minimises ``||x0 + v(x0, 0) - x1||^2``, i.e. the flow-matching loss with
``t ≡ 0``. Only the 1-step sampler of the result is meaningful afterwards: the field at ``t > 0``
is no longer trained.

:func:`rf_core.training.fit` draws ``t`` from ``cfg.t_sampler`` (no "zero" option), so this
module has its own short loop with the same optimiser, clipping and EMA.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rf_core.config import TrainConfig
from rf_core.losses import rf_loss
from rf_core.training import Batch, FitResult


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
) -> FitResult:
    """Train a 1-step student initialised from ``teacher`` (the k-RF model) on reflow pairs.

    Args:
        teacher: the k-RF velocity field; left unchanged (a deep copy is trained).
        batches: iterable of ``(x0, x1, y)`` reflow pairs (restarted when exhausted) or a
            callable ``step -> (x0, x1, y)``.
        cfg: optimiser settings; ``steps``, ``lr``, ``weight_decay``, ``ema_decay``,
            ``grad_clip``, ``loss`` and ``log_every`` are used, ``t_sampler`` is not (t ≡ 0).
        device: where to train.
        callback: called as ``callback(step, mean_loss)`` every ``cfg.log_every`` steps.

    Returns:
        FitResult whose ``model`` (EMA if enabled, eval mode) is the distilled student.

    Raises:
        ValueError: if ``batches`` runs out on its first pass.
        FloatingPointError: when the loss becomes NaN or Inf.
    """
    student = copy.deepcopy(teacher).to(device).train()
    next_batch = _batch_fn(batches)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = None
    if cfg.ema_decay > 0:
        ema = AveragedModel(
            student, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True
        )
    losses: list[Tensor] = []
    for step in range(cfg.steps):
        x0, x1, y = (b.to(device) for b in next_batch(step))
        loss = distill_loss(student, x0, x1, y, kind=cfg.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        opt.step()
        if ema is not None:
            ema.update_parameters(student)
        losses.append(loss.detach())
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            recent = torch.stack(losses[-cfg.log_every :]).mean().item()
            if not torch.isfinite(torch.tensor(recent)):
                raise FloatingPointError(f"distillation loss is {recent} at step {step + 1}")
            if callback is not None:
                callback(step + 1, recent)
    final = ema.module if ema is not None else student
    return FitResult(
        model=final.eval(), losses=torch.stack(losses).tolist(), steps=cfg.steps, raw_model=student
    )


def _batch_fn(batches: Iterable[Batch] | Callable[[int], Batch]) -> Callable[[int], Batch]:
    """step -> batch, restarting a re-iterable source (epochs) when it is exhausted."""
    if callable(batches) and not hasattr(batches, "__iter__"):
        return batches
    it = iter(batches)

    def get(step: int) -> Batch:
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(batches)
            if it is batches:  # a one-shot iterator cannot restart
                raise ValueError(f"batches ran out after {step} steps") from None
            return next(it)

    return get
