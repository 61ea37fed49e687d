"""Training task: fit a velocity model on data (1-RF) or on a pair store (reflow), save it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from rf_core.config import ModelConfig, TrainConfig
from rf_core.distill import distill
from rf_core.models import build_model
from rf_core.training import (
    checkpoint_sha256,
    fit,
    independent_batches,
    load_checkpoint,
    save_checkpoint,
)
from storage import tracking
from storage.stream import PairStream
from tasks.data import load_data
from tasks.progress import Progress

FLUSH_EVERY = 10  # callbacks buffered per MLflow write (each write costs ~20 ms on SQLite)


def data_batches(
    dataset: str, batch_size: int, seed: int, n_toy: int, root: str | None
) -> Iterable[tuple[torch.Tensor, ...]]:
    """Endless 1-RF batches: shuffled data, each paired with fresh noise."""
    x1, y = load_data(dataset, "train", n_toy=n_toy, seed=seed, root=root)
    return independent_batches(x1, y, min(batch_size, len(x1)), torch.Generator().manual_seed(seed))


@task(cache_policy=NO_CACHE, task_run_name="train-{k}rf")
def train_model(
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    out: str,
    run_id: str,
    k: int,
    *,
    dataset: str | None = None,
    n_toy: int = 20_000,
    root: str | None = None,
    data_seed: int = 0,
    store: str | None = None,
    init_checkpoint: str | None = None,
    device: str = "cpu",
    distilled: bool = False,
) -> dict:
    """Train k-RF and write its checkpoint to ``out``; metrics go to MLflow run ``run_id``.

    k = 1 trains on ``dataset`` with independent noise; k > 1 streams the pairs of ``store``
    (optionally initialised from ``init_checkpoint``). ``distilled`` trains a 1-step student of
    the k-RF model in ``init_checkpoint`` on the pairs of ``store`` (rf_core.distill).

    Returns:
        {"checkpoint", "sha256", "final_loss", "seconds", "steps"}.
    """
    start = time.perf_counter()
    with torch.random.fork_rng():  # seeded init without disturbing other threads' global RNG
        torch.manual_seed(train_cfg.seed)
        model = build_model(model_cfg)
    if store is not None:
        # On an accelerator the CPU is idle during a step, so the next buffer is read meanwhile;
        # on a CPU the reader would take a core from the step (BENCHMARKS.md, pair store).
        prefetch = torch.device(device).type != "cpu"
        batches = PairStream(store, train_cfg.batch_size, seed=train_cfg.seed, prefetch=prefetch)
    else:
        batches = data_batches(dataset, train_cfg.batch_size, data_seed, n_toy, root)
    label = f"{k}-RF distill" if distilled else f"{k}-RF"
    progress = Progress(
        f"train-{k}rf" + "-distill" * distilled, train_cfg.steps, f"training {label}"
    )
    rows: list[tuple[int, dict]] = []

    def on_log(step: int, loss: float) -> None:
        rows.append((step, {"train_loss": loss}))
        progress.update(step, f"{label} step {step}/{train_cfg.steps} loss {loss:.4f}")
        if len(rows) >= FLUSH_EVERY:
            tracking.log_metrics(rows, run_id)
            rows.clear()

    if distilled:
        if store is None or init_checkpoint is None:
            raise ValueError("distillation needs a pair store and the k-RF init_checkpoint")
        teacher, _ = load_checkpoint(init_checkpoint, map_location=device)
        result = distill(teacher, batches, train_cfg, device=device, callback=on_log)
    else:
        result = fit(
            model, batches, train_cfg, device=device, callback=on_log, init_from=init_checkpoint
        )
    tracking.log_metrics(rows, run_id)
    extra = {"k": k, "store": store, "init": init_checkpoint, "dataset": dataset}
    extra |= {"distilled": True} if distilled else {}
    path = save_checkpoint(Path(out), result.model, train_cfg, extra=extra)
    return {
        "checkpoint": str(path),
        "sha256": checkpoint_sha256(path),
        "final_loss": float(sum(result.losses[-50:]) / len(result.losses[-50:])),
        "seconds": time.perf_counter() - start,
        "steps": result.steps,
    }
