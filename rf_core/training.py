"""The training loop: flow matching on (x0, x1, y) batches, resumable and data-parallel.

One loop trains 1-RF, k-RF and the distilled student: the coupling of the batches decides which
(independent noise and data, or pairs ``(x0, ODE_k(x0))``). :func:`fit` can write a training
state every ``cfg.checkpoint_every`` steps and continue from one (bit-identically on the same
device), run as one of several data-parallel processes (:mod:`rf_core.distributed`), in bf16
autocast, under ``torch.compile``, with a warmup and cosine schedule and gradient accumulation.

Couplings and batch sources live in :mod:`rf_core.batches`, model checkpoints in
:mod:`rf_core.checkpoint`; both are re-exported here, where they used to be defined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rf_core.batches import (
    Batch,
    Resumable,
    independent_batches,
    independent_coupling,
    minibatches,
)
from rf_core.checkpoint import (
    CKPT_FORMAT,
    checkpoint_sha256,
    clone_model,
    load_checkpoint,
    save_atomically,
    save_checkpoint,
)
from rf_core.config import TrainConfig
from rf_core.distributed import SINGLE, World, mean
from rf_core.guidance import with_label_dropout
from rf_core.precision import tf32
from rf_core.train_step import Run, process_seed

__all__ = [
    "CKPT_FORMAT",
    "Batch",
    "FitResult",
    "checkpoint_sha256",
    "clone_model",
    "fit",
    "independent_batches",
    "independent_coupling",
    "load_checkpoint",
    "minibatches",
    "save_atomically",
    "save_checkpoint",
]
Saver = Callable[[int, dict[str, Any]], None]


@dataclass
class FitResult:
    """Result of :func:`fit`.

    Attributes:
        model: the EMA model (or the trained model itself when ``ema_decay == 0``), in eval mode.
        losses: training loss of every step (those before a resume included).
        steps: optimizer steps taken (in total, before a resume included).
        raw_model: the trained (non-averaged) model.
        resumed_from: the step the run continued from (0 for a run from scratch).
    """

    model: nn.Module
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    raw_model: nn.Module | None = None
    resumed_from: int = 0


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
    *,
    resume: dict[str, Any] | None = None,
    save: Saver | None = None,
    world: World = SINGLE,
) -> FitResult:
    """Train a velocity field by flow matching on (x0, x1, y) batches.

    Args:
        model: velocity field with ``.config``; trained in place.
        batches: iterable of ``(x0, x1, y)`` (restarted when exhausted) or a callable
            ``step -> (x0, x1, y)``. The coupling of the pairs decides 1-RF vs reflow. To write
            or resume training states an iterable must be :class:`~rf_core.batches.Resumable`.
            Under data parallelism each process passes its own share (see rf_core.batches).
        cfg: optimisation settings.
        device: where to train.
        callback: called as ``callback(step, mean_loss)`` every ``cfg.log_every`` steps (in
            every process; under data parallelism the loss is the mean over processes). After a
            resume it is first called for the steps logged before it, so it sees each logged
            step exactly once.
        init_from: checkpoint whose weights (same ModelConfig) initialise ``model`` first.
        resume: a training state's payload (rf_core.train_state) to continue from; the run
            then goes on exactly as the run that wrote it would have.
        save: ``save(step, payload)`` is called by rank 0 every ``cfg.checkpoint_every`` steps
            and after the last one; it must write the payload before it returns (its tensors
            are the live weights). Give it in every process or in none: the state gathers each
            process's random state and data position.
        world: this process's place among data-parallel processes (the process group must be
            initialised, see rf_core.distributed).

    Returns:
        FitResult with the EMA model (eval mode), per-step losses and the raw model.

    Raises:
        FloatingPointError: when the loss becomes NaN or Inf.
        ValueError: a state to write or resume with batches that cannot say their position.
    """
    if (save or resume) and not (callable(batches) or isinstance(batches, Resumable)):
        raise ValueError(
            f"{type(batches).__name__} batches cannot be saved or resumed: give a "
            "rf_core.batches.Resumable source or a callable step -> batch"
        )
    if init_from is not None and resume is None:
        src, _ = load_checkpoint(init_from, expected_config=model.config)
        model.load_state_dict(src.state_dict())
    dev = torch.device(device)
    model.to(dev).train()
    run = Run(model, cfg, dev, world)
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), tf32(dev):
        torch.manual_seed(process_seed(cfg.seed, world.rank))
        losses: list[Tensor] = []
        logged: list[tuple[int, float]] = []
        if resume is not None:
            run.restore(resume, batches)
            losses, logged = list(resume["losses"].to(dev).unbind()), list(resume["logged"])
            for done, recent in logged if callback is not None else ():
                callback(done, recent)
        run.wrap()
        start = resume["step"] if resume is not None else 0
        get_batch = _batch_source(batches)
        if cfg.label_dropout > 0:  # only then: a default config draws exactly what it did before
            get_batch = with_label_dropout(
                get_batch, cfg.label_dropout, cfg.seed, world.rank, world.size
            )
        _loop(run, get_batch, batches, start, losses, logged, callback, save)
    final = run.ema.module if run.ema is not None else model
    return FitResult(
        model=final.eval(), losses=torch.stack(losses).tolist(), steps=cfg.steps,
        raw_model=model, resumed_from=start,
    )  # fmt: skip


def _loop(run: Run, get_batch, batches, start, losses, logged, callback, save) -> None:
    """Steps ``start`` .. ``cfg.steps - 1``: log, check, and write states as they fall due."""
    cfg, world = run.cfg, run.world
    for step in range(start, cfg.steps):
        x0, x1, y = (b.to(run.device) for b in get_batch(step))
        losses.append(run.step(x0, x1, y))
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            # Sync only here (not every step) so GPU training is not stalled by .item().
            window = mean(torch.stack(losses[-cfg.log_every :]), world)
            losses[-len(window) :] = list(window.unbind())
            recent = window.mean().item()
            if not torch.isfinite(torch.tensor(recent)):
                raise FloatingPointError(f"training loss is {recent} at step {done}")
            logged.append((done, recent))
            if callback is not None:
                callback(done, recent)
        if save is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
            payload = run.state(done, losses, logged, batches)
            if payload is not None:
                save(done, payload)
