"""What the pair-generation benchmarks share (``pairgen``, ``gpu_bench``): the benchmark's model
and the seed recipe they are measured against.

Pair error and the reference solve are the product's (:mod:`rf_core.pair_error`): RMS(x1 - x1_ref)
/ RMS(x1_ref) over all pairs, the reference dopri5 at rtol = atol = 1e-7 on the same noise. It is
a float32 solve by default; ``dtype=torch.float64`` solves a double copy of the model, measured
4e-5 from the float32 one, 40x below the errors being compared, at 5x the CPU time
(``python -m benchmarks.pairgen --check-reference``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torchdiffeq import odeint

from benchmarks.common import PIPELINE_CONFIG
from flows.config import load_config
from rf_core.config import ModelConfig, TrainConfig
from rf_core.data import load_mnist5k
from rf_core.models import build_model
from rf_core.solver_spec import SolverSpec
from rf_core.training import fit, independent_batches, load_checkpoint, save_checkpoint

# The seed's generate_paired_data solve as a pair store's solver (its batches of 256 apart).
SEED_SOLVER = SolverSpec(method="dopri5", rtol=1e-5, atol=1e-5)
# The pipeline's own MNIST-5k model (a patch-2 U-Net, base 16), so the timings and NFE are those
# of the model `make run` generates pairs with; 1-RF trained for a shorter budget than the
# pipeline's 2,500 steps x 128 so a first run (with training) stays within minutes on 2 cores.
MNIST_MODEL = load_config(PIPELINE_CONFIG).model
TINY_MODEL = ModelConfig(
    kind="unet", data_shape=(1, 8, 8), num_classes=10, base_channels=8, channel_mult=(1,)
)
# lr as the pipeline's base stage; EMA decay 0.99 rather than 0.999 because 400 steps are too
# few for a 0.999 average to forget the random initialisation.
BENCH_TRAIN = TrainConfig(steps=400, batch_size=64, lr=2e-3, ema_decay=0.99, log_every=50)


def bench_model(
    cfg: ModelConfig, train: TrainConfig, cache_dir: Path, log=print
) -> tuple[nn.Module, Path]:
    """The 1-RF model of the benchmark: trained on MNIST-5k once, then loaded from the cache.

    The cache file is keyed by the model and training configs, so changing either retrains.
    """
    key = json.dumps([cfg.model_dump(mode="json"), train.model_dump(mode="json")], sort_keys=True)
    path = cache_dir / f"pairgen-1rf-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"
    if path.exists():
        return load_checkpoint(path, expected_config=cfg)[0].eval(), path
    x1, y = load_mnist5k("train")
    if tuple(x1.shape[1:]) != cfg.data_shape:  # tiny smoke model: shrink the digits
        x1 = nn.functional.interpolate(x1, size=cfg.data_shape[1:], mode="area")
    log(f"training the benchmark's 1-RF model ({train.steps} steps), cached at {path}")
    batches = independent_batches(x1, y, train.batch_size, torch.Generator().manual_seed(0))
    start = time.perf_counter()
    res = fit(build_model(cfg), batches, train, callback=lambda s, loss: log(f"  {s} {loss:.4f}"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_checkpoint(tmp, res.model, train, extra={"train_seconds": time.perf_counter() - start})
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache entry
    return res.model.eval(), path


@torch.no_grad()
def seed_recipe(model: nn.Module, x0: Tensor, y: Tensor, batch_size: int = 256):
    """The seed's ``generate_paired_data`` solve: dopri5 1e-5 per batch, concatenated in memory.

    This is the baseline's own code (torchdiffeq called directly), not rectiflow's.

    Returns:
        x1 (N, *shape) and the NFE per pair (max over batches, as for rectiflow).
    """
    model.eval()
    x1s, nfes = [], []
    for xb, yb in zip(x0.split(batch_size), y.split(batch_size), strict=True):
        calls = [0]

        def ode_func(t, x, yb=yb, calls=calls):
            calls[0] += 1
            return model(x, t.expand(x.size(0)), yb)

        traj = odeint(ode_func, xb, torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-5, method="dopri5")
        x1s.append(traj[-1].cpu())
        nfes.append(calls[0])
    return torch.cat(x1s), max(nfes)


def efficiency(pairs_per_s: float, nfe: float, forward_per_s: float) -> float:
    """Fraction of the time spent in model forwards: pairs/s * NFE / (forward images/s)."""
    return pairs_per_s * nfe / forward_per_s
