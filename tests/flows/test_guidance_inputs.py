"""Guidance in the stages: a source model or an evaluated model trained without label dropout
is refused by name before any work; a guided evaluation logs the guided metrics and grids."""

from __future__ import annotations

import mlflow
import pytest
import torch

from flows.config import load_config
from flows.errors import InputError
from flows.evaluate import evaluate
from flows.inputs import evaluate_inputs, generate_inputs
from rf_core.config import ModelConfig, TrainConfig
from rf_core.models import build_model
from rf_core.training import save_checkpoint
from tests.helpers import tiny_config_dict

NET = {"kind": "unet", "data_shape": [1, 28, 28], "num_classes": 10, "base_channels": 8}
NET["channel_mult"] = [1]
DIGITS = {"data.dataset": "mnist5k", "model": NET, "base.label_dropout": 0.1}
DIGITS["reflow.train.label_dropout"] = 0.1


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    d, cfg = tmp_path_factory.mktemp("guided"), ModelConfig.model_validate(NET)
    torch.manual_seed(0)
    net = build_model(cfg)
    dropout = TrainConfig(steps=1, batch_size=1, label_dropout=0.1)
    return {
        "dropout": str(save_checkpoint(d / "dropout.pt", net, dropout, extra={"k": 1})),
        "plain": str(save_checkpoint(d / "plain.pt", net, extra={"k": 1})),
    }


def _cfg(runs, **overrides):
    return load_config(tiny_config_dict(runs, **DIGITS, **overrides))


def test_guided_pairs_need_a_source_trained_with_dropout(tmp_path, checkpoints):
    cfg = _cfg(
        tmp_path / "runs", **{"pairs.solver": {"method": "euler", "steps": 2, "guidance": 1}}
    )
    assert generate_inputs(cfg, checkpoints["dropout"], None).model.checkpoint
    with pytest.raises(InputError, match=r"^model: guidance 1 needs a model trained with label"):
        generate_inputs(cfg, checkpoints["plain"], str(tmp_path / "p.zarr"))
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / "runs" / "stores").exists()


def test_a_guided_sweep_needs_every_model_trained_with_dropout(tmp_path, checkpoints):
    cfg = _cfg(tmp_path / "runs", **{"evaluate.guidance": [0, 2]})
    models = [checkpoints["dropout"], checkpoints["plain"]]
    with pytest.raises(InputError, match=r"^models\[1\]: guidance 2 needs a model trained with"):
        evaluate_inputs(cfg, models)
    unguided = _cfg(tmp_path / "runs")
    assert len(evaluate_inputs(unguided, models)) == 2  # w = 0 only: any model


@pytest.mark.slow  # the evaluate flow with a (small) classifier trained first
def test_a_guided_evaluation_logs_guided_metrics_and_grids(prefect_api, runs_dir, checkpoints):
    ev = {"n_samples": 40, "steps": [1], "adaptive": False, "classifier": {"steps": 15}}
    cfg = _cfg(runs_dir, name="guided", evaluate={**ev, "guidance": [0, 1.5]})
    res = evaluate(cfg, models=[checkpoints["dropout"]])
    assert [(r.guidance, r.nfe) for r in res.rows] == [(0.0, 1), (1.5, 2)]
    run = mlflow.get_run(res.run_id)
    m = run.data.metrics
    assert m["1rf/nfe/euler_1"] == 1 and m["1rf/nfe/euler_1_w1.5"] == 2
    assert {"1rf/class_acc/euler_1_w1.5", "1rf/straightness_w1.5"} <= set(m)
    figures = {f.path for f in mlflow.MlflowClient().list_artifacts(res.run_id, "figures")}
    assert {"figures/grid_1rf_euler_1.png", "figures/grid_1rf_euler_1_w1.5.png"} <= figures
