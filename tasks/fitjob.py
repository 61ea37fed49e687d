"""What one training run is, and running it in any of its data-parallel processes.

A :class:`Work` is plain data (settings, paths, ids): rank 0 (the Prefect task) sends it to the
other processes, and every process builds its model and its share of the batches from it with
:func:`run_work`. Nothing here imports Prefect or talks to MLflow, so follower processes
(:mod:`tasks.ddp`) stay light; the Prefect tasks in :mod:`tasks.train` add progress and logging
on rank 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from rf_core.config import ModelConfig, TrainConfig
from rf_core.distill import distill
from rf_core.distributed import World
from rf_core.models import build_model
from rf_core.train_state import TrainStates
from rf_core.training import FitResult, fit, load_checkpoint
from storage.stream import PairStream
from tasks.data import DataInput, train_batches

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
        devices: one device per data-parallel process (rank r trains on ``devices[r]``).
        states: folder of this stage's training states (None: write none).
        resume_from: the state file to continue from (chosen and checked by the flow).
        fingerprint: what a state must match to be resumed (recorded in each state).
        step_delay_s: testing only: sleep before each step (a window to kill the run in).
    """

    model: ModelConfig
    train: TrainConfig
    out: str
    run_id: str
    k: int
    dataset: str
    devices: tuple[str, ...] = ("cpu",)
    states: str | None = None
    resume_from: str | None = None
    fingerprint: Mapping[str, Any] = field(default_factory=dict)
    step_delay_s: float = 0.0

    @property
    def device(self) -> str:
        return self.devices[0]

    @property
    def processes(self) -> int:
        return len(self.devices)


@dataclass(frozen=True)
class PairsInput:
    """Reflow and distillation input: a complete pair store and the model to start from."""

    store: str
    init_checkpoint: str | None = None


@dataclass(frozen=True)
class Work:
    """One training run: ``base`` (1-RF on data), ``reflow`` (k-RF on pairs) or ``distill``."""

    kind: Literal["base", "reflow", "distill"]
    job: TrainJob
    source: DataInput | PairsInput


def new_model(job: TrainJob) -> nn.Module:
    with torch.random.fork_rng():  # seeded init without disturbing other threads' global RNG
        torch.manual_seed(job.train.seed)
        return build_model(job.model)


def pair_stream(job: TrainJob, store: str, world: World) -> PairStream:
    """This process's share of the store's chunks, in batches of its share of the batch."""
    # On an accelerator the CPU is idle during a step, so the next buffer is read meanwhile;
    # on a CPU the reader would take a core from the step (BENCHMARKS.md, pair store).
    device = job.devices[world.rank]
    prefetch = torch.device(device).type != "cpu"
    size = job.train.batch_size // world.size
    return PairStream(
        store, size, seed=job.train.seed, prefetch=prefetch, rank=world.rank,
        world_size=world.size,
    )  # fmt: skip


def _saver(job: TrainJob, world: World) -> Callable[[int, dict], None] | None:
    """Rank 0 writes states (with their manifest); the others only take part in gathering."""
    if job.states is None:
        return None
    if not world.is_main:
        return lambda step, payload: None
    states = TrainStates(job.states, job.train.keep_last)
    manifest = {"fingerprint": dict(job.fingerprint), "run_id": job.run_id}
    return lambda step, payload: states.save(step, payload, manifest)


class Slowed:
    """Batches handed out ``delay_s`` late (fault drills); resumable when the source is."""

    def __init__(self, batches: Iterable[Any], delay_s: float):
        self.batches, self.delay_s = batches, delay_s

    def __iter__(self):
        for batch in self.batches:
            time.sleep(self.delay_s)
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state)


def run_work(
    work: Work, world: World, callback: Callback | None = None, device: str | None = None
) -> FitResult:
    """Train ``work`` as process ``world.rank`` (on ``device``, default ``job.devices[rank]``):
    build the model and this process's batches, resume from ``job.resume_from`` if set, and
    write states (rank 0)."""
    job = work.job
    device = device or job.devices[world.rank]
    resume = None
    if job.resume_from is not None:
        resume = torch.load(job.resume_from, map_location=device, weights_only=True)
    options = {"resume": resume, "save": _saver(job, world), "world": world}
    if work.kind == "base":
        labels = job.model.num_classes > 0  # a model without classes: every label -1
        batches = train_batches(
            work.source, job.model.data_shape, job.train.batch_size, labels, world.rank, world.size
        )
        batches = Slowed(batches, job.step_delay_s) if job.step_delay_s else batches
        return fit(new_model(job), batches, job.train, device, callback, **options)
    pairs, stream = work.source, pair_stream(job, work.source.store, world)
    stream = Slowed(stream, job.step_delay_s) if job.step_delay_s else stream
    if work.kind == "reflow":
        model, init = new_model(job), pairs.init_checkpoint
        return fit(model, stream, job.train, device, callback, init_from=init, **options)
    if pairs.init_checkpoint is None:
        raise ValueError("distillation needs the k-RF teacher as init_checkpoint")
    teacher, _ = load_checkpoint(pairs.init_checkpoint, map_location=device)
    return distill(teacher, stream, job.train, device, callback, **options)
