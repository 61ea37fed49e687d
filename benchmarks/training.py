"""Training on the CPU: what training states cost, and two data-parallel processes vs one.

    python -m benchmarks.training                # both parts, then print the tables
    python -m benchmarks.training --write        # also rewrite BENCHMARKS.md's training section

Checkpoint overhead: ``fit`` of configs/toy2d.yaml's 1-RF (MLP, batch 256) for ``--steps`` steps
with no training states, with states at the default ``checkpoint_every``, and every 100 steps
(the arms interleaved, median of ``--rounds``); plus the time one state of the make-run U-Net
(configs/mnist5k.yaml) takes to write, against one of its training steps.

DDP scaling: the same toy training in 1 process and in 2 gloo processes at the same global batch
(each process half of it), steps/s. On a 2-core machine two processes share the cores, so this
is context for the data-parallel code path, not a speed claim: data parallelism pays on
several GPUs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.multiprocessing as mp

from benchmarks.common import (
    PIPELINE_CONFIG,
    ROOT,
    interleave,
    machine_line,
    markdown_table,
    median,
    write_section,
)
from flows.config import load_config
from rf_core import distributed
from rf_core.config import TrainConfig
from rf_core.data import load_mnist5k, sample_toy
from rf_core.distributed import World
from rf_core.models import build_model
from rf_core.train_state import TrainStates
from rf_core.training import fit, independent_batches

TOY = ROOT / "configs" / "toy2d.yaml"


@dataclass(frozen=True)
class Row:
    """One measured setting: seconds (median), ratio to the section's baseline."""

    setting: str
    seconds: float
    ratio: float
    note: str = ""


def toy_data(n: int = 20_000) -> tuple[torch.Tensor, torch.Tensor]:
    x1 = sample_toy("8gaussians", n, torch.Generator().manual_seed(0))
    return x1, torch.full((n,), -1, dtype=torch.int64)


def toy_fit(train: TrainConfig, folder: Path | None, rank: int = 0, world: int = 1) -> None:
    """configs/toy2d.yaml's 1-RF training, writing states to ``folder`` (None: no states)."""
    cfg = load_config(TOY)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    g = torch.Generator().manual_seed(0)
    batches = independent_batches(*toy_data(), train.batch_size // world, g, rank, world)
    save = None
    if folder is not None:
        states = TrainStates(folder, train.keep_last)
        save = (lambda s, p: states.save(s, p, {})) if rank == 0 else (lambda s, p: None)
    fit(model, batches, train, save=save, world=World(rank, world))


def checkpoint_rows(steps: int, rounds: int) -> list[Row]:
    base = load_config(TOY).base.model_copy(update={"steps": steps})
    every = base.checkpoint_every
    with tempfile.TemporaryDirectory() as tmp:
        arms = {
            "no training states": lambda: toy_fit(base, None),
            f"states every {every} steps (default)": lambda: toy_fit(base, Path(tmp) / "a"),
            "states every 100 steps": lambda: toy_fit(
                base.model_copy(update={"checkpoint_every": 100}), Path(tmp) / "b"
            ),
        }
        times = {k: median(v) for k, v in interleave(arms, rounds).items()}
    ref = times["no training states"]
    note = f"toy2d 1-RF, {steps} steps, batch {base.batch_size}"
    return [Row(k, v, v / ref, note) for k, v in times.items()]


def unet_state_rows(rounds: int) -> list[Row]:
    """One training step of the make-run U-Net vs writing one training state of it."""
    cfg = load_config(PIPELINE_CONFIG)
    train = cfg.base.model_copy(update={"steps": 2, "checkpoint_every": 1})
    x1, y = load_mnist5k("train")
    with tempfile.TemporaryDirectory() as tmp:
        payloads: list[dict] = []
        torch.manual_seed(0)
        model = build_model(cfg.model)
        g = torch.Generator().manual_seed(0)
        batches = independent_batches(x1, y, train.batch_size, g)
        fit(model, batches, train, save=lambda s, p: payloads.append(p))
        states = TrainStates(Path(tmp), keep_last=1)
        steps = train.model_copy(update={"steps": 1})
        arms = {
            "one U-Net training step": lambda: fit(model, batches, steps),
            "writing one U-Net training state": lambda: states.save(1, payloads[-1], {}),
        }
        times = {k: median(v) for k, v in interleave(arms, rounds).items()}
        size = states.path(1).stat().st_size / 2**20
    step = times["one U-Net training step"]
    every = cfg.base.checkpoint_every
    write = times["writing one U-Net training state"]
    note = f"{size:.1f} MiB state; at every {every} steps: +{write / (every * step):.2%}"
    return [Row(k, v, v / step, note) for k, v in times.items()]


def _rank(rank: int, world: int, address: str, train: TrainConfig) -> None:
    torch.set_num_threads(1)
    distributed.init(address, World(rank, world), "cpu")
    try:
        toy_fit(train, None, rank, world)
    finally:
        distributed.close()


def ddp_rows(steps: int, rounds: int) -> list[Row]:
    import socket

    train = load_config(TOY).base.model_copy(update={"steps": steps})

    def two() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        args = (2, f"tcp://127.0.0.1:{port}", train)
        mp.start_processes(_rank, args=args, nprocs=2, start_method="spawn")

    def one() -> None:
        torch.set_num_threads(2)
        toy_fit(train, None)

    measured = interleave({"1 process": one, "2 processes": two}, rounds)
    times = {k: median(v) for k, v in measured.items()}
    note = f"toy2d 1-RF, {steps} steps, global batch {train.batch_size}"
    ref = times["1 process"]
    return [Row(k, v, v / ref, f"{steps / v:.0f} steps/s; {note}") for k, v in times.items()]


def main(argv: list[str] | None = None) -> None:
    """CLI entry; see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__)
    p.add_argument("--steps", type=int, default=3000, help="toy training steps per arm")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repeats (median)")
    p.add_argument("--write", action="store_true", help="rewrite BENCHMARKS.md's section")
    a = p.parse_args(argv)
    start = time.perf_counter()
    ckpt = checkpoint_rows(a.steps, a.rounds) + unet_state_rows(a.rounds)
    ddp = ddp_rows(max(a.steps // 3, 100), a.rounds)
    body = "\n".join([
        "## Training: state overhead and data-parallel processes (CPU)",
        "",
        f"`python -m benchmarks.training --steps {a.steps} --rounds {a.rounds}` ({machine_line()};"
        f" {time.perf_counter() - start:.0f} s). Ratios against the first row of each table, "
        "measured interleaved in one run.",
        "",
        markdown_table(ckpt),
        "",
        markdown_table(ddp),
    ])  # fmt: skip
    print(body)
    if a.write:
        write_section("training", body)


if __name__ == "__main__":
    main()
