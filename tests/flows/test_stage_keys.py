"""Resume keys come from what decides a stage's result, never from where or how it runs.

Every stage's key (and a pair store's identity) is computed by the function the flow itself uses;
two configs that differ only in the ``execution:`` and ``testing:`` sections -- including a field
the execution section does not have yet -- must give the same keys, and a result setting must not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from flows.common import store_uri
from flows.config import PipelineConfig, load_config
from flows.evaluate import evaluate_stage
from flows.execution import ExecutionParams
from flows.generate import generate_stage
from flows.inputs import GenerateInputs, TrainingInputs, TrainingPairs, model_arg, store_args
from flows.pipeline import pipeline_stage
from flows.stage import result_sections, stage_key
from flows.train import base_stage, distill_stage, reflow_stage
from rf_core.config import ModelConfig
from rf_core.models import build_model
from rf_core.training import save_checkpoint
from tests.helpers import tiny_config_dict


class WiderExecution(ExecutionParams):
    """The execution section as a later version might have it: one more setting."""

    pin_threads: bool = True


class WiderConfig(PipelineConfig):
    execution: WiderExecution = WiderExecution()


OTHER_EXECUTION = {
    "devices": ["cpu", "cpu"],
    "task_runner": "dask",
    "dask_address": "tcp://10.0.0.5:8786",
    "dask_workers": 7,
    "dask_shards_per_worker": 1,
    "dask_timeout_s": 3.0,
    "storage_options": {"s3": {"endpoint_url": "http://minio.local:9000"}},
    "retries": 5,
    "retry_delay_s": [0.5, 2.0],
    "progress_every": 1,
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    net = build_model(ModelConfig(kind="mlp", data_shape=(2,), hidden=32, depth=2))
    ckpt = save_checkpoint(tmp_path_factory.mktemp("keys") / "m.pt", net, extra={"k": 1})
    return model_arg(str(ckpt), "model")


def keys(cfg: PipelineConfig, model) -> dict[str, object]:
    """Every resume key of a pipeline run from ``model``, and the identity of its pair store."""
    given = GenerateInputs(model, store_uri(cfg, model))
    trained = TrainingInputs(TrainingPairs("/stores/p.zarr", "d" * 64, {"k": 1}), model)
    return {
        "train_base": base_stage(cfg).key,
        "generate_pairs": generate_stage(cfg, given).key,
        "store uri": given.uri,
        "store identity": store_args(cfg, model),
        "train_reflow": reflow_stage(cfg, trained).key,
        "distill": distill_stage(cfg, trained).key,
        "evaluate": evaluate_stage(cfg, [model]).key,
        "pipeline": pipeline_stage(cfg).key,
    }


def test_execution_and_testing_sections_change_no_key(tmp_path, model):
    base = load_config(tiny_config_dict(tmp_path))
    other = tiny_config_dict(tmp_path, testing={"fail_shards": {0: 1}, "chunk_delay_s": 0.5})
    other["execution"] = {**OTHER_EXECUTION, "pin_threads": False}  # a field added later
    wider = WiderConfig.model_validate(other)
    assert wider.execution.pin_threads is False and wider.execution.retries == 5
    assert keys(wider, model) == keys(base, model)
    plain = load_config({**other, "execution": OTHER_EXECUTION})
    assert keys(plain, model) == keys(base, model)


@pytest.mark.parametrize(
    ("override", "changed"),
    [
        ({"base.steps": 151}, {"train_base", "pipeline"}),
        ({"pairs.seed": 1}, {"store identity", "pipeline"}),
        ({"pairs.store_root": "/elsewhere"}, {"generate_pairs", "store uri", "pipeline"}),
        ({"reflow.train.lr": 1e-4}, {"train_reflow", "pipeline"}),
        ({"distill.steps": 7}, {"distill", "pipeline"}),
        ({"evaluate.n_samples": 128}, {"evaluate", "pipeline"}),
        ({"base.precision": "bf16"}, {"train_base", "pipeline"}),
        ({"reflow.train.lr_schedule": "cosine"}, {"train_reflow", "pipeline"}),
        ({"distill.accumulation": 2}, {"distill", "pipeline"}),
        # When states are written, and compiled kernels, change no recipe; nor do the processes.
        ({"base.checkpoint_every": 7, "base.keep_last": 1, "base.compile": True}, set()),
        ({"execution.train_devices": 2, "execution.devices": ["cpu", "cpu"]}, set()),
        # DataLoader workers read the same batches in the same order: no key changes.
        ({"data.workers": 8}, set()),
        ({"data.n_train": 999}, {"train_base", "evaluate", "pipeline"}),
    ],
)
def test_result_settings_change_their_keys(tmp_path: Path, model, override, changed):
    before = keys(load_config(tiny_config_dict(tmp_path)), model)
    after = keys(load_config(tiny_config_dict(tmp_path, **override)), model)
    assert {k for k in before if before[k] != after[k]} == changed


class FirstTrainConfig(BaseModel):
    """TrainConfig as it was before training states, schedules, accumulation and precision."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    t_sampler: str = "uniform"
    loss: str = "mse"
    grad_clip: float | None = 1.0
    seed: int = 0
    log_every: int = 50


def test_training_settings_added_later_leave_old_keys_alone(tmp_path, model):
    """A config using none of the later settings keeps the keys the first version computed, so
    finished stages of older runs folders are still reused."""
    cfg = load_config(tiny_config_dict(tmp_path))
    first = FirstTrainConfig(**cfg.base.model_dump(include=set(FirstTrainConfig.model_fields)))
    assert base_stage(cfg).key == stage_key("train_base", cfg.data, cfg.model, first, cfg.seed)
    assert result_sections(cfg)["base"] == first.model_dump(mode="json")
    changed = load_config(tiny_config_dict(tmp_path, **{"base.warmup_steps": 5}))
    assert "warmup_steps=5" in str(changed.base) and "checkpoint_every" not in str(changed.base)


DIGITS = {
    "data.dataset": "mnist5k",
    "model": {"kind": "unet", "data_shape": [1, 28, 28], "num_classes": 10, "base_channels": 8},
    "base.label_dropout": 0.1,
    "reflow.train.label_dropout": 0.1,
}


@pytest.mark.parametrize(
    ("override", "changed"),
    [
        ({"base.label_dropout": 0.2}, {"train_base", "pipeline"}),
        ({"reflow.train.label_dropout": 0.2}, {"train_reflow", "pipeline"}),
        ({"evaluate.guidance": [0, 2]}, {"evaluate", "pipeline"}),
        ({"pairs.solver": {"method": "dopri5", "rtol": 1e-4, "atol": 1e-4, "guidance": 1.0}},
         {"store identity", "pipeline"}),
    ],
)  # fmt: skip
def test_guidance_settings_change_their_keys(tmp_path: Path, model, override, changed):
    before = keys(load_config(tiny_config_dict(tmp_path, **DIGITS)), model)
    after = keys(load_config(tiny_config_dict(tmp_path, **{**DIGITS, **override})), model)
    assert {k for k in before if before[k] != after[k]} == changed
