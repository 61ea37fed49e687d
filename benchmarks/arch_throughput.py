"""Throughput of candidate velocity architectures: training steps/s and pair-solve forwards/s.

A paired comparison (interleaved rounds on the same machine at the same moment), so the
ratios hold on a loaded machine even when the absolute numbers do not. From them the pipeline
time of a recipe is estimated as ``steps / steps_per_s + pairs * nfe / forwards_per_s``::

    python -m benchmarks.arch_throughput --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from benchmarks.common import interleave, machine_line, markdown_table, median
from rf_core.config import ModelConfig
from rf_core.losses import rf_loss
from rf_core.models import build_model

MNIST = {"kind": "unet", "data_shape": (1, 28, 28), "num_classes": 10}
# name -> U-Net settings; "patch2-16" is the earlier `make run` model, "seed-154k" the seed's size.
CANDIDATES: dict[str, dict] = {
    "patch2-16": {"base_channels": 16, "channel_mult": (1, 2), "patch_size": 2},
    "patch2-32": {"base_channels": 32, "channel_mult": (1, 2), "patch_size": 2},
    "full-16": {"base_channels": 16, "channel_mult": (1, 2), "patch_size": 1},
    "full-16x122": {"base_channels": 16, "channel_mult": (1, 2, 2), "patch_size": 1},
    "full-24": {"base_channels": 24, "channel_mult": (1, 2), "patch_size": 1},
    "seed-154k": {"base_channels": 16, "channel_mult": (2, 2), "patch_size": 1},
}


@dataclass(frozen=True)
class Throughput:
    """One architecture's measured speed (medians over rounds)."""

    arch: str
    params: int
    train_steps_per_s: float
    forwards_per_s: float
    vs_patch2_train: float
    vs_patch2_forward: float


def _train_step(model: torch.nn.Module, batch: int, opt: torch.optim.Optimizer):
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(batch, 1, 28, 28, generator=g), torch.randn(batch, 1, 28, 28, generator=g)
    y, t = torch.randint(0, 10, (batch,), generator=g), torch.rand(batch, generator=g)

    def step() -> None:
        loss = rf_loss(model, x0, x1, y, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _forward(model: torch.nn.Module, batch: int):
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y, t = torch.arange(batch) % 10, torch.full((batch,), 0.5)

    def fwd() -> None:
        with torch.inference_mode():
            model(x, t, y)

    return fwd


def measure(names: list[str], rounds: int, steps: int, batch: int) -> list[Throughput]:
    """Interleaved timing of ``steps`` train steps (batch ``batch``) and 4 forwards of 512."""
    train, fwd, params = {}, {}, {}
    for name in names:
        torch.manual_seed(0)
        model = build_model(ModelConfig(**MNIST, **CANDIDATES[name]))
        params[name] = sum(p.numel() for p in model.parameters())
        step = _train_step(model, batch, torch.optim.AdamW(model.parameters(), lr=1e-4))
        f = _forward(model, 512)
        step(), f()  # warm-up
        train[name] = lambda step=step: [step() for _ in range(steps)]
        fwd[name] = lambda f=f: [f() for _ in range(4)]
    t_train = interleave(train, rounds)
    t_fwd = interleave(fwd, rounds)
    sps = {n: steps / median(t_train[n]) for n in names}
    fps = {n: 4 * 512 / median(t_fwd[n]) for n in names}
    ref = names[0]
    return [
        Throughput(n, params[n], sps[n], fps[n], sps[n] / sps[ref], fps[n] / fps[ref])
        for n in names
    ]


def main(argv: list[str] | None = None) -> list[Throughput]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5, help="train steps per timed round")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--archs", default=",".join(CANDIDATES), help="first one is the reference")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = measure(a.archs.split(","), a.rounds, a.steps, a.batch)
    print(f"{time.strftime('%Y-%m-%d %H:%M')} · {machine_line()}")
    print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
