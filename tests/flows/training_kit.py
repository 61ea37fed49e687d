"""Helpers of the training-stage tests: CLI processes, their states, MLflow runs, a pair store."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import torch

from flows.config import load_config
from rf_core.training import load_checkpoint
from storage import tracking

REPO = Path(__file__).resolve().parents[2]


def cli_env(api_url: str) -> dict[str, str]:
    """Environment of a CLI process against the session's Prefect server."""
    # COLUMNS: rich would wrap long log lines (file paths) at 80 columns outside a terminal.
    return {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO), "COLUMNS": "500"}


def newest_state(runs: Path, stage: str) -> int:
    """The step of the newest state manifest of ``stage`` under ``runs`` (0 if none)."""
    found = (runs / "checkpoints" / "states").glob(f"*/{stage}-*/state-*.json")
    return max((int(p.stem.split("-")[1]) for p in found), default=0)


def stage_runs(runs: Path, stage: str) -> list:
    tracking.configure(runs)
    exp = mlflow.get_experiment_by_name("tiny")
    return mlflow.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{tracking.TAG_STAGE}` = '{stage}'",
        order_by=["attributes.start_time ASC"], output_format="list",
    )  # fmt: skip


def loss_history(run_id: str) -> list[tuple[int, float]]:
    hist = mlflow.MlflowClient().get_metric_history(run_id, "train_loss")
    return sorted((m.step, m.value) for m in hist)


def final_weights(run_id: str) -> dict[str, torch.Tensor]:
    model, _ = load_checkpoint(tracking.run_output_model(run_id).checkpoint)
    return model.state_dict()


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def pair_store(tmp: Path, cfg: dict) -> str:
    """A complete pair store generated (by the generate_pairs flow) from a briefly trained
    1-RF checkpoint file."""
    from flows.generate import generate_pairs
    from rf_core.config import ModelConfig, TrainConfig
    from rf_core.data import sample_toy
    from rf_core.models import build_model
    from rf_core.training import fit, independent_batches, save_checkpoint

    torch.manual_seed(0)
    model = build_model(ModelConfig.model_validate(cfg["model"]))
    x1 = sample_toy("8gaussians", 2000, torch.Generator().manual_seed(0))
    y = torch.full((2000,), -1)
    batches = independent_batches(x1, y, 128, torch.Generator().manual_seed(0))
    fit(model, batches, TrainConfig(steps=300, batch_size=128, lr=3e-3))
    ckpt = save_checkpoint(tmp / "1rf.pt", model, extra={"k": 1})
    return generate_pairs(load_config(cfg), model=str(ckpt), store=str(tmp / "p.zarr")).uri
