"""Training tasks: 1-RF on data, k-RF on a pair store, a 1-step student distilled from k-RF.

Each task takes a :class:`TrainJob` (what every training needs) and its own input, writes a
checkpoint and returns a :class:`TrainResult`; the loss curve goes to the job's MLflow run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from rf_core.config import ModelConfig, TrainConfig
from rf_core.distill import distill
from rf_core.models import build_model
from rf_core.training import FitResult, checkpoint_sha256, fit, load_checkpoint, save_checkpoint
from storage import tracking
from storage.stream import PairStream
from tasks.data import DataInput, train_batches
from tasks.progress import Progress
from tasks.results import TrainResult

FLUSH_EVERY = 10  # callbacks buffered per MLflow write (each write costs ~20 ms on SQLite)
Callback = Callable[[int, float], None]


@dataclass(frozen=True)
class TrainJob:
    """What every training task needs.

    Attributes:
        model: architecture of the network trained.
        train: optimiser, schedule and EMA settings.
        out: path of the checkpoint to write.
        run_id: MLflow run that receives the loss curve.
        k: the k of the k-RF trained (or distilled).
        dataset: the dataset the model generates (recorded in the checkpoint).
        device: where to train.
    """

    model: ModelConfig
    train: TrainConfig
    out: str
    run_id: str
    k: int
    dataset: str
    device: str = "cpu"


@dataclass(frozen=True)
class PairsInput:
    """Reflow and distillation input: a complete pair store and the model to start from."""

    store: str
    init_checkpoint: str | None = None


def _new_model(job: TrainJob) -> nn.Module:
    with torch.random.fork_rng():  # seeded init without disturbing other threads' global RNG
        torch.manual_seed(job.train.seed)
        return build_model(job.model)


def _stream(job: TrainJob, store: str) -> PairStream:
    # On an accelerator the CPU is idle during a step, so the next buffer is read meanwhile;
    # on a CPU the reader would take a core from the step (BENCHMARKS.md, pair store).
    prefetch = torch.device(job.device).type != "cpu"
    return PairStream(store, job.train.batch_size, seed=job.train.seed, prefetch=prefetch)


def _train(job: TrainJob, run: Callable[[Callback], FitResult], extra: dict) -> TrainResult:
    """Run ``run(callback)`` with progress and MLflow loss logging, then save its model with
    ``extra`` in the checkpoint (``distilled: True`` marks a distilled student)."""
    start, steps = time.perf_counter(), job.train.steps
    tag = f"{job.k}rf" + ("-distill" if extra.get("distilled") else "")
    label = f"{job.k}-RF" + (" distill" if extra.get("distilled") else "")
    progress = Progress(f"train-{tag}", steps, f"training {label}")
    rows: list[tuple[int, dict]] = []

    def on_log(step: int, loss: float) -> None:
        rows.append((step, {"train_loss": loss}))
        progress.update(step, f"{label} step {step}/{steps} loss {loss:.4f}")
        if len(rows) >= FLUSH_EVERY:
            tracking.log_metrics(rows, job.run_id)
            rows.clear()

    result = run(on_log)
    tracking.log_metrics(rows, job.run_id)
    meta = {"k": job.k, "store": None, "init": None, "dataset": job.dataset, **extra}
    path = save_checkpoint(Path(job.out), result.model, job.train, extra=meta)
    tail = result.losses[-50:]
    return TrainResult(
        str(path), checkpoint_sha256(path), float(sum(tail) / len(tail)),
        time.perf_counter() - start, result.steps,
    )  # fmt: skip


@task(cache_policy=NO_CACHE, task_run_name="train-{job.k}rf")
def train_base_model(job: TrainJob, data: DataInput) -> TrainResult:
    """1-RF: flow matching on ``data``, each batch paired with fresh noise (a model without
    classes trains unconditionally: every label -1)."""
    labels = job.model.num_classes > 0
    batches = train_batches(data, job.model.data_shape, job.train.batch_size, labels)
    model = _new_model(job)

    def run(cb: Callback) -> FitResult:
        return fit(model, batches, job.train, device=job.device, callback=cb)

    return _train(job, run, {})


@task(cache_policy=NO_CACHE, task_run_name="train-{job.k}rf")
def train_reflow_model(job: TrainJob, pairs: PairsInput) -> TrainResult:
    """k-RF on the (x0, x1) pairs of a store, initialised from ``init_checkpoint`` if given."""
    model, batches, init = _new_model(job), _stream(job, pairs.store), pairs.init_checkpoint

    def run(cb: Callback) -> FitResult:
        return fit(model, batches, job.train, device=job.device, callback=cb, init_from=init)

    return _train(job, run, {"store": pairs.store, "init": init})


@task(cache_policy=NO_CACHE, task_run_name="distill-{job.k}rf")
def distill_model(job: TrainJob, pairs: PairsInput) -> TrainResult:
    """A 1-step student of the k-RF teacher in ``init_checkpoint`` (also its initialisation),
    trained on the pairs of ``store`` (rf_core.distill). Builds no model of its own."""
    if pairs.init_checkpoint is None:
        raise ValueError("distillation needs the k-RF teacher as init_checkpoint")
    teacher, _ = load_checkpoint(pairs.init_checkpoint, map_location=job.device)
    batches = _stream(job, pairs.store)

    def run(cb: Callback) -> FitResult:
        return distill(teacher, batches, job.train, device=job.device, callback=cb)

    extra = {"store": pairs.store, "init": pairs.init_checkpoint, "distilled": True}
    return _train(job, run, extra)
