"""A CIFAR-shaped pipeline end to end: an image folder of coloured shapes (3x32x32) through
train-base -> pairs -> reflow -> evaluate with a small U-Net with attention and dropout, scored
with the Inception FID.

The Inception network here has RANDOM weights saved in the real weights' file format (so the
real loading path runs offline): the FID values are meaningless as image quality. What is
tested is the wiring: the pipeline's number equals torchmetrics' FrechetInceptionDistance on the
same images, and the lineage runs dataset -> 1-RF -> pairs -> 2-RF.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from flows.config import load_config
from flows.evaluate import evaluate
from flows.pipeline import pipeline
from flows.stage import stage_key
from rf_core.datasets import FolderImages
from rf_core.evaluate import sweep_inputs
from rf_core.frechet import INCEPTION_ENV, to_uint8
from rf_core.models import build_model
from rf_core.solvers import solve_ode
from rf_core.training import load_checkpoint, save_checkpoint
from storage import tracking
from tests.helpers import make_runs_dir, write_shape_images

N_EVAL = 8  # Inception forwards on one CPU core cost ~0.3 s per image


def _rgb_config(runs, folder, weights) -> dict:
    return {
        "name": "shapes",
        "runs_dir": str(runs),
        "data": {"dataset": "folder", "path": str(folder), "flip": True, "workers": 1},
        "model": {
            "kind": "unet",
            "data_shape": [3, 32, 32],
            "num_classes": 3,
            "base_channels": 8,
            "channel_mult": [1, 2],
            "time_emb_dim": 16,
            "num_res_blocks": 1,
            "attention_resolutions": [16],
            "dropout": 0.1,
        },
        "base": {"steps": 20, "batch_size": 32, "log_every": 10},
        "pairs": {"n": 64, "chunk": 32, "solver": {"method": "rk4", "steps": 2}},
        "reflow": {"rounds": 1, "train": {"steps": 10, "batch_size": 32, "log_every": 5}},
        "evaluate": {
            "n_samples": N_EVAL,
            "steps": [1],
            "adaptive": False,
            "inception_weights": str(weights),
        },
        "tracking": {"model_format": "pickle"},
        "execution": {"devices": ["cpu"]},
    }


@pytest.fixture(scope="module")
def rgb_run(prefect_api, mlflow_template, inception_weights, tmp_path_factory):
    base = tmp_path_factory.mktemp("rgb")
    folder = write_shape_images(base / "shapes", per_class=100)  # 300 images, 3 classes
    runs = make_runs_dir(base, mlflow_template)
    cfg = load_config(_rgb_config(runs, folder, inception_weights))
    return cfg, pipeline(cfg)


def _run_of(model_id: str):
    return mlflow.get_run(mlflow.get_logged_model(model_id).source_run_id)


@pytest.mark.slow
def test_rgb_folder_pipeline_records_dataset_lineage_and_inception_fid(rgb_run):
    cfg, result = rgb_run
    base, reflow = result.models
    assert (base.k, reflow.k) == (1, 2)
    ident = FolderImages(cfg.data.path, (3, 32, 32)).identity()
    # dataset -> 1-RF: the folder is a "training" dataset input of the base run, with its classes
    run = _run_of(base.model_id)
    (data_input,) = [d for d in run.inputs.dataset_inputs if d.dataset.name == "shapes"]
    tags = {t.key: t.value for t in data_input.tags}
    assert tags["mlflow.data.context"] == "training" and tags[tracking.TAG_DIGEST] == ident.digest
    assert (
        data_input.dataset.digest == ident.digest[:32]
        and cfg.data.path in data_input.dataset.source
    )
    assert run.data.tags[tracking.TAG_CLASSES] == "circle, square, triangle"
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="dataset.json"
    )
    assert json.loads(Path(local).read_text())["classes"] == ["circle", "square", "triangle"]
    key = stage_key("train_base", cfg.data, cfg.model, cfg.base, cfg.seed, ident.digest)
    assert run.data.tags[tracking.TAG_KEY] == key  # a changed file changes the key
    assert [d.digest for d in tracking.training_data(base.model_id)] == [ident.digest[:32]]
    # 1-RF -> pairs -> 2-RF
    (pairs,) = result.stores
    assert tracking.pair_set_source(pairs.digest) == base.model_id
    assert tracking.models_trained_on(pairs.digest) == [reflow.model_id]
    _, sets = tracking.training_inputs(reflow.model_id)
    assert [s.digest for s in sets] == [pairs.digest[:32]]
    assert tracking.training_inputs(base.model_id)[1] == []  # the folder is no pair set
    out = CliRunner().invoke(
        app, ["lineage", reflow.model_id, "--runs-dir", str(cfg.runs)], terminal_width=400
    )
    assert out.exit_code == 0, out.output
    text = out.output
    assert text.index(cfg.data.path) < text.index(base.model_id) < text.index(pairs.uri)
    assert text.index(pairs.uri) < text.index(reflow.model_id)
    # an Inception FID on each model
    for m in (base, reflow):
        metrics = tracking.model_metrics(m.model_id)
        assert metrics["fid_inception/euler_1"] > 0 and "fd/euler_1" not in metrics


@pytest.mark.slow
def test_pipeline_fid_equals_torchmetrics_on_the_same_images(rgb_run, monkeypatch):
    from torchmetrics.image.fid import FrechetInceptionDistance

    cfg, result = rgb_run
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    e = cfg.evaluate
    # the real side: N_EVAL training images, drawn with the evaluation seed
    ds = FolderImages(cfg.data.path, (3, 32, 32))
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(e.seed))[:N_EVAL]
    real = torch.stack([ds[int(i)][0] for i in idx])
    # the fake side: the 2-RF's one Euler step from the sweep's shared noise and labels
    model, _ = load_checkpoint(tracking.checkpoint_path(result.models[1].model_id))
    x0, y = sweep_inputs(cfg.model.data_shape, N_EVAL, cfg.model.num_classes, e.seed)
    with torch.no_grad():
        fake = solve_ode(model, x0, y, method="euler", steps=1).x1.clamp(-1, 1)
    fid = FrechetInceptionDistance(
        feature=2048, feature_extractor_weights_path=e.inception_weights, antialias=False
    )
    fid.update(to_uint8(real), real=True)
    fid.update(to_uint8(fake), real=False)
    ours = tracking.model_metrics(result.models[1].model_id)["fid_inception/euler_1"]
    assert ours == pytest.approx(float(fid.compute()), rel=1e-4)


def test_missing_weights_stop_pipeline_and_evaluate_before_any_work(
    prefect_api, runs_dir, tmp_path, monkeypatch
):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch hub cache
    folder = write_shape_images(tmp_path / "shapes", per_class=2)
    cfg = load_config(_rgb_config(runs_dir, folder, tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match=r"evaluate.inception_weights: .*missing\.pth"):
        pipeline(cfg)
    client = mlflow.MlflowClient(f"sqlite:///{runs_dir / 'mlflow.db'}")
    assert client.get_experiment_by_name("shapes") is None  # no run, no training
    assert not (runs_dir / "checkpoints").exists()
    ckpt = save_checkpoint(tmp_path / "m.pt", build_model(cfg.model))
    with pytest.raises(ValueError, match=r"evaluate\.inception_weights"):
        evaluate(cfg, models=[str(ckpt)])
    assert not (runs_dir / "eval").exists()  # nothing sampled
    assert not (tmp_path / "torch").exists()  # nothing downloaded
