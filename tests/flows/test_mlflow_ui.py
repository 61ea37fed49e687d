"""Lineage as the MLflow UI shows it: a real pipeline run on a fresh tracking database, then a real
``mlflow server`` on it, read through its REST API (what the UI reads) and in headless Chromium.

Also what a user does next with the run's models: the registry's champion loads as a sampler and
``rectiflow sample`` takes it by name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.config import load_config
from flows.pipeline import pipeline
from storage import tracking
from tests.helpers import tiny_config_dict
from tests.procs import (
    MLFLOW_SERVER_ENV,
    free_port,
    mlflow_server_cmd,
    start_group,
    stop_group,
    wait_healthy,
)

CHROMIUM = shutil.which("chromium")
SMALL = {"base.steps": 60, "reflow.train.steps": 40, "pairs.n": 512, "evaluate.n_samples": 128}


@pytest.fixture(scope="module")
def world(prefect_api, tmp_path_factory):
    """The toy pipeline on a database it creates itself (not a copy of the tests' template),
    run from another directory, and an ``mlflow server`` on that database."""
    root = tmp_path_factory.mktemp("ui")
    runs, cwd = root / "runs", Path.cwd()
    os.chdir(root.parent)  # artifacts must not follow the current directory
    try:
        result = pipeline(load_config(tiny_config_dict(runs, **SMALL)))
    finally:
        os.chdir(cwd)
    port, log = free_port(), root / "server.log"
    cmd = mlflow_server_cmd(Path(sys.executable).parent, f"sqlite:///{runs / 'mlflow.db'}", port)
    proc = start_group(cmd, log, {**os.environ, **MLFLOW_SERVER_ENV})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield {"url": url, "runs": runs, "result": result, "root": root}
    finally:
        stop_group(proc)


def _get(url: str, path: str, **params: str) -> dict:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/{path}?{query}", timeout=60) as r:
        return json.loads(r.read())


def _logged_model(url: str, model_id: str) -> dict:
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/logged-models/{model_id}", timeout=60) as r:
        return json.loads(r.read())["model"]


@pytest.mark.slow  # a pipeline run and an mlflow server (~60-120 s on 2 loaded cores)
def test_rest_api_shows_the_pair_set_the_description_and_the_kind(world):
    url, result = world["url"], world["result"]
    base, reflow = result.models
    (pairs,) = result.stores
    name = tracking.pair_set_name(pairs.uri)
    model = _logged_model(url, reflow.model_id)
    used = {(m.get("dataset_name"), m.get("dataset_digest")) for m in model["data"]["metrics"]}
    assert (name, pairs.digest[:32]) in used  # "Datasets used" on the model's page
    tags = {t["key"]: t["value"] for t in model["info"]["tags"]}
    note = tags[tracking.NOTE]
    assert base.model_id in note and name in note and "pair set" in note
    assert f"#/experiments/{result.experiment_id}/models/{base.model_id}" in note
    assert f"#/experiments/{result.experiment_id}/runs/{result.run_id}" in note  # pipeline run
    run = _get(url, "runs/get", run_id=model["info"]["source_run_id"])["run"]
    run_tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert run_tags[tracking.NOTE] == note
    exp = _get(url, "experiments/get", experiment_id=result.experiment_id)["experiment"]
    assert {"key": tracking.KIND_TAG, "value": tracking.KIND} in exp["tags"]
    default = _get(url, "experiments/get", experiment_id="0")["experiment"]
    assert default["artifact_location"] == (world["runs"] / "mlartifacts" / "0").as_uri()
    assert not (world["root"].parent / "mlruns").exists()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_model_page_in_a_browser_names_its_pair_set(world, tmp_path):
    result = world["result"]
    reflow = result.models[1]
    page = f"{world['url']}/#/experiments/{result.experiment_id}/models/{reflow.model_id}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    flags += [f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=30000"]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=180
    ).stdout
    assert tracking.pair_set_name(result.stores[0].uri) in dom, dom[-2000:]
    assert reflow.model_id in dom and "pair set" in dom  # the description, rendered


@pytest.mark.slow
def test_the_champion_samples_after_a_pipeline_run(world, tmp_path):
    tracking.configure(world["runs"])
    sampler = mlflow.pyfunc.load_model("models:/tiny-2rf@champion")
    points = sampler.predict(pd.DataFrame({"label": [-1] * 5}), params={"steps": 2})
    assert points.shape == (5, 2) and np.isfinite(points).all()
    out = tmp_path / "s.npz"
    args = ["sample", "models:/tiny-2rf@champion", "--runs-dir", str(world["runs"])]
    res = CliRunner().invoke(app, [*args, "--n", "5", "--steps", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    with np.load(out) as z:
        np.testing.assert_allclose(z["x"], points, atol=1e-6)
