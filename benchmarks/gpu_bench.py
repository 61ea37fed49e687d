"""GPU pair-generation and training throughput in one go (run by ``benchmarks/gpu.sh``).

    python -m benchmarks.gpu_bench --device cuda            # < 8 min on one GPU
    python -m benchmarks.gpu_bench --device cpu --dry-run   # seconds: the same code path, tiny

Pair generation on the benchmark's 1-RF MNIST U-Net: the seed recipe (dopri5 1e-5, batch 256)
against rk4 on a uniform grid at a large batch in fp32, TF32, bf16 autocast and torch.compile
("reduce-overhead" = CUDA graphs); pair error against dopri5 1e-7 in float64.
Training: flow-matching steps/s at a fixed batch in fp32, TF32 and bf16 autocast; and 1,000
steps of configs/cifar10.yaml's U-Net (49.4M parameters, attention at 16x16) at batch 128 in fp32
and bf16 (``--parts cifar`` runs that part alone).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.common import ROOT, machine_line, markdown_table, median, timed, write_section
from benchmarks.pairgen_base import (
    BENCH_TRAIN,
    MNIST_MODEL,
    TINY_MODEL,
    bench_model,
    efficiency,
    seed_recipe,
)
from flows.config import load_config
from rf_core.config import ModelConfig
from rf_core.data import load_mnist5k
from rf_core.losses import rf_loss
from rf_core.models import build_model
from rf_core.pair_error import pair_error, reference_solve
from rf_core.solvers import solve_ode

PARTS = {"pairs", "training", "cifar"}
# The cifar part's dry run: the CIFAR config's kinds of blocks (attention, dropout), tiny.
CIFAR_TINY = ModelConfig(
    kind="unet", data_shape=(3, 32, 32), num_classes=10, base_channels=8, channel_mult=(1, 2),
    num_res_blocks=2, attention_resolutions=(16,), dropout=0.1,
)  # fmt: skip


@dataclass(frozen=True)
class GpuRow:
    """One measured configuration."""

    task: str
    mode: str
    batch: int
    nfe: int | None
    per_s: float
    pair_error: float | None
    efficiency: float | None


class Autocast(nn.Module):
    """Run a velocity model under bf16 autocast and return float32 (the ODE state stays fp32)."""

    def __init__(self, model: nn.Module, device_type: str):
        super().__init__()
        self.model, self.device_type = model, device_type
        self.config = model.config

    def forward(self, x, t, y=None):
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.model(x, t, y).float()


def set_tf32(on: bool) -> None:
    """TF32 matmuls and convolutions on/off (no effect on the CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def forward_rate(model, x, t, y, device, reps: int = 5) -> float:
    """Forward images/s under inference_mode (median of ``reps``)."""
    with torch.inference_mode():
        model(x, t, y)
        return len(x) / median([timed(lambda: model(x, t, y), device)[0] for _ in range(reps)])


def bench_pairs(model, cfg, n, batch, steps, device, compile_ok) -> list[GpuRow]:
    """Seed recipe vs rk4 x ``steps`` in several execution modes, same noise, one reference."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn((n, *cfg.data_shape), generator=g).to(device)
    y = torch.randint(0, cfg.num_classes, (n,), generator=g).to(device)
    set_tf32(False)
    ref = reference_solve(model, x0, y, batch_size=batch, dtype=torch.float64).x1
    sec, (x1, nfe) = timed(lambda: seed_recipe(model, x0, y, min(256, n)), device)
    rows = [
        GpuRow(
            "pairs",
            "seed dopri5 1e-5 fp32",
            min(256, n),
            nfe,
            n / sec,
            pair_error(x1.to(device), ref),
            None,
        )
    ]
    modes = {
        "fp32": (model, False),
        "tf32": (model, True),
        "bf16": (Autocast(model, device.type), False),
    }
    if compile_ok:
        compiled = torch.compile(model, mode="reduce-overhead", dynamic=False)
        compiled.config = cfg
        modes["compile+cudagraphs fp32"] = (compiled, False)
    xb, tb, yb = x0[:batch], torch.rand(batch, device=device), y[:batch]
    for mode, (m, tf32) in modes.items():
        set_tf32(tf32)
        solve = lambda m=m: solve_ode(m, x0, y, method="rk4", steps=steps, batch_size=batch)  # noqa: E731
        solve()  # warm-up (cuDNN autotune, compile, graph capture)
        secs = [timed(solve, device) for _ in range(3)]
        res = secs[-1][1]
        rate = n / median([s for s, _ in secs])
        fwd = forward_rate(m, xb, tb, yb, device)
        rows.append(
            GpuRow(
                "pairs",
                f"rk4×{steps} {mode}",
                batch,
                res.nfe,
                rate,
                pair_error(res.x1, ref),
                efficiency(rate, res.nfe, fwd),
            )
        )
    set_tf32(False)
    return rows


def bench_training(
    cfg, x1, y, steps, device, modes=("fp32", "tf32", "bf16"), task="training"
) -> list[GpuRow]:
    """Flow-matching optimizer steps/s (AdamW, independent coupling) on one fixed batch
    ``x1, y`` in each of ``modes`` (fp32, TF32, bf16 autocast)."""
    x1, y, batch = x1.to(device), y.to(device), len(x1)
    rows = []
    for mode in modes:
        set_tf32(mode == "tf32")
        model = build_model(cfg).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        amp = torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16" else nullcontext()

        def step(model=model, opt=opt, amp=amp):
            x0, t = torch.randn_like(x1), torch.rand(batch, device=device)
            with amp:
                loss = rf_loss(model, x0, x1, y, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(3):
            step()
        sec, _ = timed(lambda step=step: [step() for _ in range(steps)], device)
        rows.append(GpuRow(task, mode, batch, None, steps / sec, None, None))
    set_tf32(False)
    return rows


def mnist_batch(cfg, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` MNIST-5k training digits (resized to the model's shape) and their labels."""
    x1, y = load_mnist5k("train")
    if tuple(x1.shape[1:]) != cfg.data_shape:
        x1 = nn.functional.interpolate(x1, size=cfg.data_shape[1:], mode="area")
    return x1[:batch], y[:batch]


def cifar_training(device, dry_run: bool, steps: int, batch: int) -> list[GpuRow]:
    """Steps/s of configs/cifar10.yaml's U-Net (fp32, bf16) on a CIFAR-shaped random batch:
    the speed of a step does not depend on the pixels."""
    cfg = CIFAR_TINY if dry_run else load_config(ROOT / "configs" / "cifar10.yaml").model
    g = torch.Generator().manual_seed(0)
    x1 = torch.rand((batch, *cfg.data_shape), generator=g) * 2 - 1
    y = torch.randint(0, cfg.num_classes, (batch,), generator=g)
    n = sum(p.numel() for p in build_model(cfg).parameters())
    task = f"training cifar10 U-Net ({n / 1e6:.1f}M), {steps} steps"
    return bench_training(cfg, x1, y, steps, device, ("fp32", "bf16"), task)


def main(argv: list[str] | None = None) -> list[GpuRow]:
    """CLI entry; see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_bench", description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dry-run", action="store_true", help="tiny model and sizes (seconds, CPU ok)")
    p.add_argument("--pairs", type=int, default=2048)
    p.add_argument("--steps", type=int, default=14, help="rk4 steps of the default")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "gpu.json")
    p.add_argument("--write", action="store_true", help="rewrite BENCHMARKS.md's gpu section")
    p.add_argument(
        "--parts", default="pairs,training,cifar", help="comma-separated: pairs,training,cifar"
    )
    p.add_argument("--cifar-steps", type=int, default=1000, help="timed steps of the cifar part")
    a = p.parse_args(argv)
    a.parts = set(a.parts.split(","))
    if a.parts - PARTS:
        p.error(f"--parts: unknown {sorted(a.parts - PARTS)}; allowed: {', '.join(PARTS)}")
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible; use --device cpu --dry-run to test")
    start = time.perf_counter()
    cfg = TINY_MODEL if a.dry_run else MNIST_MODEL
    rows = []
    if "pairs" in a.parts:
        train = BENCH_TRAIN.model_copy(update={"steps": 5 if a.dry_run else BENCH_TRAIN.steps})
        model, _ = bench_model(cfg, train, a.out.parent)
        n, compile_ok = (8 if a.dry_run else a.pairs), device.type == "cuda" and not a.dry_run
        steps = 2 if a.dry_run else a.steps
        rows += bench_pairs(model.to(device).eval(), cfg, n, n, steps, device, compile_ok)
    if "training" in a.parts:
        x1, y = mnist_batch(cfg, 8 if a.dry_run else 256)
        rows += bench_training(cfg, x1, y, 3 if a.dry_run else 50, device)
    if "cifar" in a.parts:
        steps, batch = (3, 4) if a.dry_run else (a.cifar_steps, 128)
        rows += cifar_training(device, a.dry_run, steps, batch)
    body = "\n".join(
        [
            "## GPU: pair generation and training throughput",
            "",
            f"Command: `benchmarks/gpu.sh` · {time.strftime('%Y-%m-%d')} · "
            f"{machine_line(device)} · {time.perf_counter() - start:.0f} s",
            "",
            markdown_table(rows),
        ]
    )
    print(body)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    if a.write and not a.dry_run:
        write_section("gpu", body)
    return rows


if __name__ == "__main__":
    main()
