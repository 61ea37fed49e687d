"""Training tasks: 1-RF on data, k-RF on a pair store, a 1-step student distilled from k-RF.

Each task takes a :class:`~tasks.fitjob.TrainJob` (what every training needs) and its own input,
trains (in one process, or as rank 0 of several: :mod:`tasks.ddp`), writes a checkpoint and
returns a :class:`TrainResult`; the loss curve goes to the job's MLflow run (every logged step
once, those of the run a resume continues included) and progress to a Prefect artifact.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from rf_core.distributed import SINGLE
from rf_core.training import FitResult, checkpoint_sha256, save_checkpoint
from storage import tracking
from tasks import ddp
from tasks.fitjob import Callback, DataInput, PairsInput, TrainJob, Work, run_work
from tasks.progress import Progress
from tasks.results import TrainResult

__all__ = [
    "DataInput", "PairsInput", "TrainJob", "distill_model", "train_base_model",
    "train_reflow_model",
]  # fmt: skip
FLUSH_EVERY = 10  # callbacks buffered per MLflow write (each write costs ~20 ms on SQLite)


def _fit(work: Work, callback: Callback) -> FitResult:
    """Train ``work`` here, or as rank 0 of ``job.processes`` data-parallel processes."""
    if work.job.processes == 1 and ddp.torchrun_world() is None:
        return run_work(work, SINGLE, callback)
    with ddp.group(work.job.devices) as world:
        return run_work(ddp.share(work, world), world, callback)


def _train(work: Work, extra: dict) -> TrainResult:
    """Train ``work`` with progress and MLflow loss logging, then save its model with ``extra``
    in the checkpoint (``distilled: True`` marks a distilled student)."""
    job = work.job
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

    result = _fit(work, on_log)
    tracking.log_metrics(rows, job.run_id)
    meta = {"k": job.k, "store": None, "init": None, "dataset": job.dataset, **extra}
    meta |= {"processes": job.processes, "micro_batch": job.train.micro_batch(job.processes)}
    path = save_checkpoint(Path(job.out), result.model, job.train, extra=meta)
    tail = result.losses[-50:]
    return TrainResult(
        str(path), checkpoint_sha256(path), float(sum(tail) / len(tail)),
        time.perf_counter() - start, result.steps, result.resumed_from,
    )  # fmt: skip


@task(cache_policy=NO_CACHE, task_run_name="train-{job.k}rf")
def train_base_model(job: TrainJob, data: DataInput) -> TrainResult:
    """1-RF: flow matching on the job's dataset, each batch paired with fresh noise."""
    return _train(Work("base", job, data), {})


@task(cache_policy=NO_CACHE, task_run_name="train-{job.k}rf")
def train_reflow_model(job: TrainJob, pairs: PairsInput) -> TrainResult:
    """k-RF on the (x0, x1) pairs of a store, initialised from ``init_checkpoint`` if given."""
    return _train(Work("reflow", job, pairs), {"store": pairs.store, "init": pairs.init_checkpoint})


@task(cache_policy=NO_CACHE, task_run_name="distill-{job.k}rf")
def distill_model(job: TrainJob, pairs: PairsInput) -> TrainResult:
    """A 1-step student of the k-RF teacher in ``init_checkpoint`` (also its initialisation),
    trained on the pairs of ``store`` (rf_core.distill). Builds no model of its own."""
    if pairs.init_checkpoint is None:
        raise ValueError("distillation needs the k-RF teacher as init_checkpoint")
    extra = {"store": pairs.store, "init": pairs.init_checkpoint, "distilled": True}
    return _train(Work("distill", job, pairs), extra)
