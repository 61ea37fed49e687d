"""A trained model in MLflow: its pyfunc sampler (loaded and served), its velocity field, the
registry's champion and latest, and where a fresh tracking database puts artifacts."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from rf_core.config import ModelConfig, TrainConfig
from rf_core.models import build_model
from rf_core.sampling import sample
from rf_core.training import checkpoint_sha256, save_checkpoint
from storage import tracking
from tests.procs import free_port, start_group, stop_group, wait_healthy

UNET = ModelConfig(kind="unet", data_shape=(1, 8, 8), num_classes=3, base_channels=8)


@pytest.fixture
def exp(runs_dir, monkeypatch, tmp_path) -> str:
    monkeypatch.chdir(tmp_path)
    tracking.configure(runs_dir)
    return tracking.ensure_experiment("unit", runs_dir)


def _checkpoint(folder: Path, dropout: float, seed: int = 0):
    torch.manual_seed(seed)
    net = build_model(UNET).eval()
    train = TrainConfig(steps=1, batch_size=1, label_dropout=dropout)
    return net, save_checkpoint(folder / f"u{dropout}-{seed}.pt", net, train, extra={"k": 1})


def _log(exp: str, net, path, name: str = "unit-1rf", fmt: str = "pickle") -> tracking.ModelRef:
    with tracking.stage_run(exp, "train_base"):
        return tracking.log_trained_model(net, path, checkpoint_sha256(path), name, 1, fmt)


def test_the_logged_model_samples_like_rf_core_and_is_the_velocity_field(exp, tmp_path):
    net, path = _checkpoint(tmp_path, dropout=0.1)
    ref = _log(exp, net, path, fmt="pt2")
    assert checkpoint_sha256(ref.checkpoint) == checkpoint_sha256(path)
    assert ref.checkpoint.endswith("artifacts/checkpoint.pt")
    sampler = mlflow.pyfunc.load_model("models:/unit-1rf/latest")
    labels = [0, 1, 2, -1]
    got = sampler.predict(
        pd.DataFrame({"label": labels}), params={"steps": 2, "seed": 3, "guidance": 1.5}
    )
    want = sample(net, torch.tensor(labels), steps=2, seed=3, guidance=1.5, label_dropout=0.1)
    assert got.shape == (4, 1, 8, 8) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want.x.numpy())
    defaults = sampler.predict(pd.DataFrame({"label": labels}))  # 1 Euler step, seed 0
    plain = sample(net, torch.tensor(labels), steps=1, label_dropout=0.1)
    np.testing.assert_array_equal(defaults, plain.x.numpy())
    # The same LoggedModel is the velocity field for torch users.
    velocity = mlflow.pytorch.load_model(ref.uri)
    x, t, y = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, -1])
    with torch.no_grad():
        torch.testing.assert_close(velocity(x, t, y), net(x, t, y))
    with pytest.raises(MlflowException, match=r"labels in \[0, 7\]; allowed: -1\.\.2"):
        sampler.predict(pd.DataFrame({"label": [0, 7]}))


def test_a_model_without_label_dropout_refuses_guidance_when_served(exp, tmp_path):
    net, path = _checkpoint(tmp_path, dropout=0.0)
    _log(exp, net, path)
    sampler = mlflow.pyfunc.load_model("models:/unit-1rf/1")
    assert sampler.predict(pd.DataFrame({"label": [2]})).shape == (1, 1, 8, 8)
    with pytest.raises(MlflowException, match="guidance 2 needs a model trained with label drop"):
        sampler.predict(pd.DataFrame({"label": [2]}), params={"guidance": 2.0})
    with pytest.raises(MlflowException, match=r"label -1 \(unconditional\) needs"):
        sampler.predict(pd.DataFrame({"label": [-1]}))


def _evaluated(exp: str, ref: tracking.ModelRef, fd: float) -> None:
    with tracking.stage_run(exp, "evaluate"):
        tracking.log_model_metrics({"fd/euler_1": fd}, ref.model_id)
        tracking.crown_champion(ref.model_id, "fd/euler_1")


def test_champion_is_the_best_one_step_score_and_latest_the_newest(exp, tmp_path):
    refs = [_log(exp, *_checkpoint(tmp_path, 0.1, seed), name="unit-2rf") for seed in range(3)]
    assert [r.registered for r in refs] == ["unit-2rf/1", "unit-2rf/2", "unit-2rf/3"]
    client = mlflow.MlflowClient()

    def champion() -> str:
        return str(client.get_model_version_by_alias("unit-2rf", tracking.CHAMPION).version)

    _evaluated(exp, refs[0], 5.0)
    assert champion() == "1"
    _evaluated(exp, refs[1], 3.0)
    assert champion() == "2"
    _evaluated(exp, refs[2], 4.0)  # worse than the champion: it stays
    assert champion() == "2"
    _evaluated(exp, refs[2], 2.0)  # re-evaluated, better now: the alias moves
    assert champion() == "3"
    assert tracking.resolve_model("models:/unit-2rf@champion").model_id == refs[2].model_id
    newest = _log(exp, *_checkpoint(tmp_path, 0.1, 9), name="unit-2rf")  # not evaluated yet
    for uri in ("models:/unit-2rf/latest", "models:/unit-2rf@latest"):
        assert tracking.resolve_model(uri).model_id == newest.model_id
    assert champion() == "3"
    # A model not registered by rectiflow has no name to crown.
    assert tracking.crown_champion(refs[0].model_id, "no/such_metric") is None


def test_a_fresh_database_keeps_every_artifact_under_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in ./mlruns of the cwd
    runs = tmp_path / "elsewhere" / "runs"
    tracking.configure(runs)
    default = mlflow.get_experiment("0")
    assert default.artifact_location == (runs / "mlartifacts" / "0").as_uri()
    exp_id = tracking.ensure_experiment("kinds", runs)
    assert mlflow.get_experiment(exp_id).tags[tracking.KIND_TAG] == "custom_model_development"
    # An experiment made before the tag existed gets it when a flow next uses it.
    old = mlflow.MlflowClient().create_experiment("old", artifact_location=(runs / "o").as_uri())
    assert tracking.KIND_TAG not in mlflow.get_experiment(old).tags
    assert tracking.ensure_experiment("old", runs) == old
    assert mlflow.get_experiment(old).tags[tracking.KIND_TAG] == tracking.KIND
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.slow  # a real `mlflow models serve` process: ~20-60 s to answer
def test_mlflow_models_serve_answers_with_images_of_the_asked_shape(exp, runs_dir, tmp_path):
    net, path = _checkpoint(tmp_path, dropout=0.1)
    _log(exp, net, path)
    port, bin_dir = free_port(), Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"  # the server runs uvicorn from the venv
    cmd = [str(bin_dir / "mlflow"), "models", "serve", "-m", "models:/unit-1rf/1"]
    cmd += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "serve.log"
    proc = start_group(cmd, log, env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, log, path="/ping")
        records = [{"label": 0}, {"label": 2}, {"label": -1}]
        body = {"dataframe_records": records, "params": {"steps": 2, "seed": 5, "guidance": 1.0}}
        status, answer = _post(f"{url}/invocations", body)
        assert status == 200, answer
        images = np.asarray(answer["predictions"], dtype=np.float32)
        assert images.shape == (3, 1, 8, 8) and images.min() >= -1 and images.max() <= 1
        y = torch.tensor([0, 2, -1])
        want = sample(net, y, steps=2, seed=5, guidance=1.0, label_dropout=0.1)
        np.testing.assert_allclose(images, want.x.numpy(), atol=1e-6)
        status, answer = _post(f"{url}/invocations", {"dataframe_records": [{"label": 9}]})
        assert status == 400 and "allowed: -1..2" in answer["message"]
    finally:
        stop_group(proc)
