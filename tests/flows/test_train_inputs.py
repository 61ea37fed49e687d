"""Bad training settings and foreign training states stop a command before any work, exit 2,
naming the field; no state file, store or run is touched."""

from __future__ import annotations

import mlflow
import pytest
import torch
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.config import load_config
from flows.train import base_stage
from flows.train_states import fingerprint, states_folder
from rf_core.train_state import TrainStates
from storage import tracking
from tests.helpers import tiny_config_dict


def invoke(tmp_path, runs_dir, command: str, **overrides):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(runs_dir, **overrides)))
    return CliRunner().invoke(app, [command, str(path)], terminal_width=400)


def no_runs(runs_dir) -> bool:
    tracking.configure(runs_dir)
    exp = mlflow.get_experiment_by_name("tiny")
    return exp is None or not mlflow.search_runs([exp.experiment_id], output_format="list")


ON_2, ON_3 = ({"execution.train_devices": 3, "execution.devices": ["cpu"] * n} for n in (2, 3))
BAD = [
    ("train-base", {"base.checkpoint_every": 0}, "base.checkpoint_every"),
    ("train-base", {"base.keep_last": 0}, "base.keep_last"),
    ("train-base", {"base.accumulation": 3}, "base.accumulation"),
    ("run", {"reflow.train.warmup_steps": 100}, "reflow.train.warmup_steps"),
    ("train-base", {"execution.train_devices": 2}, "execution.train_devices"),
    ("run", ON_2, "execution.train_devices"),  # 3 processes on 2 listed devices
    ("train-base", {"execution.devices": ["cuda:63"]}, "execution.devices"),
    ("run", ON_3, "base.accumulation: batch_size 128 does not split into 3 processes"),
]


@pytest.mark.parametrize(("command", "overrides", "field"), BAD)
def test_bad_training_settings_fail_before_any_work(tmp_path, runs_dir, command, overrides, field):
    result = invoke(tmp_path, runs_dir, command, **overrides)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and field in result.output
    assert no_runs(runs_dir) and not (runs_dir / "checkpoints" / "states").exists()


def _foreign_state(runs_dir, processes: int, **train):
    """A valid training state in train_base's folder, as another configuration wrote it."""
    cfg = load_config(tiny_config_dict(runs_dir))
    other = cfg.base.model_copy(update=train)
    states = TrainStates(states_folder(cfg, base_stage(cfg)))
    manifest = {"fingerprint": fingerprint(cfg, "base", other, processes), "run_id": "r0"}
    return states.save(40, {"w": torch.zeros(3)}, manifest)


@pytest.mark.parametrize(
    ("processes", "train", "field"),
    [(2, {}, "execution.train_devices: training state"), (1, {"lr": 0.5}, "base.lr: training")],
)
def test_a_state_of_another_configuration_is_refused_and_kept(
    tmp_path, runs_dir, processes, train, field
):
    path = _foreign_state(runs_dir, processes, **train)
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    result = invoke(tmp_path, runs_dir, "train-base")
    assert result.exit_code == 2, result.output
    assert field in result.output and str(path) in result.output and "--fresh" in result.output
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before
    assert no_runs(runs_dir)
