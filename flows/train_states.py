"""Training stages across devices and pre-emptions, as the flows see them.

- **Devices**: ``execution.train_devices`` processes (torchrun's number under torchrun), on
  the first devices of ``execution.devices``, checked to exist before any work.
- **States**: every training stage writes its states to ``<runs>/checkpoints/states/
  <experiment>/<stage>-<stage key>/``, so running the same command again (a deployment re-run,
  ``prefect flow-run retry``) finds them. A run resumes from the newest valid state; damaged
  newer ones are named in a warning. A state written by another configuration (another number
  of processes, a state copied from elsewhere) is refused before any work, naming the
  differing settings.
- ``--fresh`` (``resume: false``) deletes the stage's states and starts from step 0; a stage
  that finished deletes them too (its model is in MLflow and ``<runs>/checkpoints/``).

See docs/training.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flows.common import devices
from flows.config import PipelineConfig
from flows.errors import InputError
from flows.stage import StageSpec
from rf_core.config import TrainConfig
from rf_core.precision import PrecisionError, check_precision
from rf_core.train_state import (
    Latest,
    StateFile,
    StateMismatchError,
    TrainStates,
    check_fingerprint,
)
from tasks.ddp import torchrun_world

FRESH_HINT = "pass --fresh (resume: false) to start over; nothing was deleted"


def processes(cfg: PipelineConfig) -> int:
    """Data-parallel training processes: torchrun's ``WORLD_SIZE`` under torchrun, else
    ``execution.train_devices``."""
    world = torchrun_world()
    return world.size if world is not None else cfg.execution.train_devices


def train_devices(cfg: PipelineConfig) -> tuple[str, ...]:
    """One device per training process (rank r trains on entry r), each checked to exist.

    Raises:
        InputError: naming ``execution.train_devices`` when fewer devices are listed (or found
            under ``auto``) than processes asked for, or ``execution.devices`` for a CUDA device
            that does not exist.
    """
    n, found = processes(cfg), devices(cfg)
    under_torchrun = torchrun_world() is not None
    if n > len(found) and cfg.execution.devices == "auto" and found == ["cpu"] and under_torchrun:
        found = ["cpu"] * n  # torchrun on a CPU machine: every process trains on the CPU
    if n > len(found):
        raise InputError(
            f"execution.train_devices: {n} training processes need {n} devices, but "
            f"execution.devices gives {len(found)} ({', '.join(found)}). List one device per "
            "process (e.g. execution.devices: [cpu, cpu] for 2 processes on the CPU with gloo)"
        )
    for d in found[:n]:
        dev = torch.device(d)
        if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
            raise InputError(
                f"execution.devices: {d} does not exist here ({torch.cuda.device_count()} CUDA "
                "devices visible)"
            )
    return tuple(found[:n])


def check_training(cfg: PipelineConfig, section: str, train: TrainConfig) -> tuple[str, ...]:
    """The training devices, once the section's settings are known to work on them.

    Raises:
        InputError: naming the field: too many processes for the devices, a batch that does not
            split into processes x accumulation, bf16 on a device without it.
    """
    devs = train_devices(cfg)
    try:
        train.micro_batch(len(devs))
    except ValueError as e:
        raise InputError(f"{section}.accumulation: {e}") from None
    for d in devs:
        try:
            check_precision(train.precision, d)
        except PrecisionError as e:
            raise InputError(f"{section}.precision: {e}") from None
    return devs


def training_sections(cfg: PipelineConfig) -> list[tuple[str, TrainConfig]]:
    """(section name, settings) of every training stage the pipeline of ``cfg`` runs."""
    out = [("base", cfg.base)]
    out += [("reflow.train", cfg.reflow.train)] if cfg.reflow.rounds else []
    return out + ([("distill", cfg.distill.train_config())] if cfg.distill.enabled else [])


def check_pipeline(cfg: PipelineConfig) -> None:
    """Every training stage's settings work on its devices (before the pipeline starts)."""
    for section, train in training_sections(cfg):
        check_training(cfg, section, train)


@dataclass(frozen=True)
class TrainingPlan:
    """How a training stage runs: its devices, its states folder, the state it resumes.

    Attributes:
        section: the config section of its settings ("base", "reflow.train", "distill").
        train: those settings; devices: one per process.
        states: the stage's states folder; resume: the state to continue from (None: step 0).
        skipped: newer states found damaged, as (file, reason).
        fingerprint: what its states record and a resumed state must match.
    """

    section: str
    train: TrainConfig
    devices: tuple[str, ...]
    states: Path
    resume: StateFile | None
    skipped: tuple[tuple[Path, str], ...]
    fingerprint: dict[str, Any]

    def warnings(self) -> list[str]:
        """One line per damaged state skipped, naming its file."""
        return [f"training state {p} skipped: {why}" for p, why in self.skipped]

    def start(self) -> None:
        """Before training: a run that resumes nothing (``--fresh``) drops older states."""
        if self.resume is None:
            TrainStates(self.states).clear()

    def finished(self) -> None:
        """The stage is done: its states are not needed any more."""
        TrainStates(self.states).clear()


def states_folder(cfg: PipelineConfig, spec: StageSpec) -> Path:
    return cfg.runs / "checkpoints" / "states" / cfg.experiment / f"{spec.name}-{spec.key}"


def fingerprint(cfg: PipelineConfig, section: str, train: TrainConfig, n: int) -> dict[str, Any]:
    """What a state of this stage must match to be resumed, keyed by config field names."""
    nested: dict[str, Any] = train.key_dump()
    for part in reversed(section.split(".")):
        nested = {part: nested}
    return nested | {"model": cfg.model.model_dump(mode="json"), "execution": {"train_devices": n}}


def training_plan(
    cfg: PipelineConfig, spec: StageSpec, section: str, train: TrainConfig
) -> TrainingPlan:
    """Check the stage's settings and find the state it resumes (nothing is written; with
    ``resume: false`` no state is resumed, see :meth:`TrainingPlan.start`).

    Raises:
        InputError: a setting that cannot work (:func:`check_training`), or a valid newest state
            written by another configuration, naming the first differing field.
    """
    devs = check_training(cfg, section, train)
    folder, prints = states_folder(cfg, spec), fingerprint(cfg, section, train, len(devs))
    found = TrainStates(folder).latest() if cfg.resume else Latest(None)
    if found.state is not None:
        try:
            check_fingerprint(found.state, prints)
        except StateMismatchError as e:
            raise InputError(f"{e.fields[0]}: {e}; {FRESH_HINT}") from None
    return TrainingPlan(section, train, devs, folder, found.state, found.skipped, prints)
