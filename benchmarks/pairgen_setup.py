"""Pair generation benchmark, part 2: the model, its input stores, forward throughput."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from benchmarks.common import ROOT, timed
from flows.config import load_config
from rf_core.config import ModelConfig, TrainConfig
from rf_core.data import load_mnist5k
from rf_core.models import build_model
from rf_core.training import fit, independent_batches, load_checkpoint, save_checkpoint
from storage.generate import chunk_inputs
from storage.pairstore import PairStore

PIPELINE_CONFIG = ROOT / "configs" / "mnist5k.yaml"
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


def replace_train(cfg: TrainConfig, steps: int) -> TrainConfig:
    """``cfg`` with another step count (frozen pydantic model)."""
    return cfg.model_copy(update={"steps": steps})


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


def make_store(
    root: Path, name: str, n: int, chunk: int, cfg: ModelConfig, solver: dict, sha: str = "unsaved"
) -> PairStore:
    """A fresh Zarr pair store whose chunk inputs are the benchmark's noise and labels."""
    return PairStore.create(
        str(root / f"{name}.zarr"),
        n=n,
        chunk=chunk,
        sample_shape=cfg.data_shape,
        seed=0,
        source={"model_id": "bench", "model_uri": "bench", "checkpoint_sha256": sha, "k": 1},
        solver=solver,
        dataset="mnist5k",
        num_classes=cfg.num_classes,
    )


def store_inputs(store: PairStore) -> tuple[Tensor, Tensor]:
    """All noise and labels of a store, in order: the inputs every setting is solved from."""
    parts = [chunk_inputs(store, i) for i in range(store.n_chunks)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def forward_inputs(cfg: ModelConfig, batch: int, seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Random (x, t, y) of ``batch`` samples for timing model forwards."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *cfg.data_shape), generator=g)
    t, y = torch.rand(batch, generator=g), torch.randint(0, max(cfg.num_classes, 1), (batch,))
    return x, t, y


def forward_seconds(model: nn.Module, cfg: ModelConfig, batch: int, calls: int) -> float:
    """Seconds for ``calls`` model forwards at ``batch`` under inference_mode (one warm-up first).

    Timed as one block of calls, like a solve's run of forwards, so that timing it next to a
    solve compares like with like under the same machine load.
    """
    with torch.inference_mode():  # inputs made here, like a solve's (a compiled graph guards on it)
        x, t, y = forward_inputs(cfg, batch)
        model(x, t, y)  # warm-up (allocator, oneDNN primitive cache)
        return timed(lambda: [model(x, t, y) for _ in range(calls)])[0]


def forward_rate(
    model: nn.Module, batch: int, cfg: ModelConfig, reps: int = 5, min_s: float = 1.0
) -> float:
    """Model forward images/s at ``batch`` under inference_mode: the median of single calls.

    At least ``reps`` calls and at least ``min_s`` seconds of them.
    """
    x, t, y = forward_inputs(cfg, batch)
    times: list[float] = []
    with torch.inference_mode():
        model(x, t, y)
        while len(times) < reps or sum(times) < min_s:
            times.append(timed(lambda: model(x, t, y))[0])
    times.sort()
    return batch / times[len(times) // 2]
