"""The evaluate flow on MNIST-5k: the Fréchet classifier is registered in MLflow once and reused."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
import torch

from flows.config import load_config
from flows.evaluate import evaluate
from rf_core.config import ModelConfig
from rf_core.models import build_model
from rf_core.training import save_checkpoint
from storage import tracking
from tests.helpers import tiny_config_dict


def _image_config(runs, name: str):
    model = {"kind": "unet", "data_shape": [1, 28, 28], "base_channels": 8, "channel_mult": [1]}
    return load_config(
        tiny_config_dict(
            runs,
            name=name,
            data={"dataset": "mnist5k"},
            model=model,
            evaluate={
                "n_samples": 48,
                "steps": [1],
                "adaptive": False,
                "classifier": {"steps": 15},
            },
        )
    )


@pytest.fixture
def image_model(tmp_path) -> str:
    """An untrained tiny U-Net checkpoint: evaluation needs a model, not a good one."""
    torch.manual_seed(0)
    cfg = ModelConfig(kind="unet", data_shape=(1, 28, 28), base_channels=8, channel_mult=(1,))
    return str(save_checkpoint(tmp_path / "unet.pt", build_model(cfg), extra={"k": 1}))


def test_classifier_is_registered_once_and_reused(prefect_api, runs_dir, image_model):
    cfg = _image_config(runs_dir, "clf-a")
    first = evaluate(cfg, models=[image_model])
    cache = runs_dir / "eval" / "classifiers"
    assert len(list(cache.glob("classifier-mnist5k-*.pt"))) == 1
    run1 = mlflow.get_run(first.run_id)
    clf_id = run1.data.tags[tracking.TAG_CLF_MODEL]
    assert run1.data.tags[tracking.TAG_CLF_VERSION] == "mnist5k-classifier/1"
    # The new classifier is an output of the run that trained it, tagged with its data digest.
    assert [m.model_id for m in run1.outputs.model_outputs] == [clf_id]
    lm = mlflow.get_logged_model(clf_id)
    assert len(lm.tags[tracking.TAG_CLF_DATA]) == 64
    figures = mlflow.MlflowClient().list_artifacts(first.run_id, "figures")
    assert "figures/samples_by_nfe.png" in {a.path for a in figures}  # models × NFE picture
    assert first.figure.endswith("samples_by_nfe.png") and Path(first.figure).is_file()
    assert (
        "1rf/precision/euler_1" in run1.data.metrics and "1rf/recall/euler_1" in run1.data.metrics
    )

    # Without the local cache, in another experiment: found in MLflow, not retrained.
    shutil.rmtree(cache)
    second = evaluate(_image_config(runs_dir, "clf-b"), models=[image_model])
    run2 = mlflow.get_run(second.run_id)
    assert run2.data.tags[tracking.TAG_CLF_MODEL] == clf_id
    assert run2.data.tags[tracking.TAG_CLF_VERSION] == "mnist5k-classifier/1"
    assert not run2.outputs.model_outputs and not cache.exists()
    versions = mlflow.MlflowClient().search_model_versions("name = 'mnist5k-classifier'")
    assert [int(v.version) for v in versions] == [1]
    # Same classifier, same seed: identical numbers.
    m1, m2 = run1.data.metrics, run2.data.metrics
    assert m1["1rf/fd/euler_1"] == m2["1rf/fd/euler_1"] and "1rf/class_acc/euler_1" not in m1


def test_other_classifier_settings_register_a_new_version(prefect_api, runs_dir, image_model):
    first = evaluate(_image_config(runs_dir, "clf-c"), models=[image_model])
    data = _image_config(runs_dir, "clf-c").model_dump(mode="json")
    data["evaluate"]["classifier"]["steps"] = 16
    second = evaluate(load_config(data), models=[image_model])
    tags = [mlflow.get_run(r.run_id).data.tags for r in (first, second)]
    assert tags[0][tracking.TAG_CLF_VERSION] == "mnist5k-classifier/1"
    assert tags[1][tracking.TAG_CLF_VERSION] == "mnist5k-classifier/2"
    assert tags[0][tracking.TAG_CLF_MODEL] != tags[1][tracking.TAG_CLF_MODEL]
