"""The toy pipeline against a real ``mlflow server`` over HTTP, compared with a local SQLite run.

The server proxies artifacts (``--serve-artifacts``), so every checkpoint the pipeline reads back
goes through the client's download path, not a local file.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import mlflow
import pytest

from flows.config import load_config
from flows.lineage import ancestors
from flows.pipeline import pipeline
from rf_core.training import checkpoint_sha256
from storage import tracking
from storage.pairstore import PairStore
from tests.flows.test_pipeline import _inputs, _stage_runs
from tests.helpers import make_runs_dir, tiny_config_dict
from tests.procs import (
    MLFLOW_SERVER_ENV,
    free_port,
    mlflow_server_cmd,
    start_group,
    stop_group,
    wait_healthy,
)

# Smaller than test_pipeline's toy: the pipeline runs twice here (SQLite, then the server).
SMALL = {
    "base.steps": 60,
    "reflow.train.steps": 40,
    "pairs.n": 512,
    "evaluate.n_samples": 128,
}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, mlflow_template):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, proxied file artifacts).

    Yields (url, process, log) without waiting for it: the test runs its SQLite pipeline while
    the server boots. The whole process group is stopped at the end.
    """
    root = tmp_path_factory.mktemp("mlflow-server")
    db = root / "srv.db"
    shutil.copyfile(mlflow_template, db)  # already migrated: saves the server ~7 s
    port = free_port()
    art = ["--artifacts-destination", (root / "art").as_uri(), "--serve-artifacts"]
    cmd = mlflow_server_cmd(Path(sys.executable).parent, f"sqlite:///{db}", port, *art)
    log = root / "server.log"
    proc = start_group(cmd, log, {**os.environ, **MLFLOW_SERVER_ENV})
    try:
        yield f"http://127.0.0.1:{port}", proc, log
    finally:
        stop_group(proc)


def _checkpoint_intact(model_id: str) -> bool:
    ref = tracking.model_ref(model_id)
    return checkpoint_sha256(ref.checkpoint) == ref.checkpoint_sha256


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """Lineage of a tiny pipeline run with model ids replaced by registered names (ids differ
    between tracking stores), read back through storage.tracking from the current store."""
    names = {m.model_id: m.registered for m in result.models}
    base, reflow = (m.model_id for m in result.models)
    (pairs,) = result.stores
    stages = _stage_runs(result.experiment_id)
    (gen,) = stages["generate_pairs"]
    (generated,) = _inputs(gen, "generated")
    (rf,) = stages["train_reflow"]
    (training,) = _inputs(rf, "training")
    inits, sets = tracking.training_inputs(reflow)
    return {
        "stages": {s: len(r) for s, r in stages.items()},
        "registered": sorted(names.values()),
        "generated_from": [names[m.model_id] for m in gen.inputs.model_inputs],
        "digest_logged": generated.dataset.digest == pairs.digest[:32],
        "training_digest": training.dataset.digest == generated.dataset.digest,
        "pair_sets_from_base": [
            p.digest == generated.dataset.digest for p in tracking.pair_sets_from_model(base)
        ],
        "trained_on": [names[i] for i in tracking.models_trained_on(pairs.digest)],
        "pair_set_source": names[tracking.pair_set_source(pairs.digest)],
        "reflow_inputs": (
            [names[i] for i in inits],
            [s.digest == training.dataset.digest for s in sets],
        ),
        "ancestors": [names[i] for i in ancestors(reflow)],
        # every metric but the wall time of training (deterministic weights, not seconds)
        "metrics": {
            names[i]: {k: v for k, v in tracking.model_metrics(i).items() if k != "train_seconds"}
            for i in names
        },
        # the checkpoint read back (in place or downloaded) is the one logged
        "checkpoints": {names[i]: _checkpoint_intact(i) for i in names},
    }


@pytest.mark.slow
def test_pipeline_over_http_has_the_lineage_of_a_sqlite_run(
    prefect_api, mlflow_template, mlflow_server, tmp_path, monkeypatch
):
    url, proc, log = mlflow_server
    local_runs = make_runs_dir(tmp_path, mlflow_template)
    local = pipeline(load_config(tiny_config_dict(local_runs, **SMALL)))
    expected = _summary(local)
    local_base_sha = checkpoint_sha256(tracking.checkpoint_path(local.models[0].model_id))

    wait_healthy(url, proc, log)
    remote_runs = tmp_path / "remote" / "runs"
    cfg = load_config(tiny_config_dict(remote_runs, **SMALL, **{"tracking.uri": url}))
    remote = pipeline(cfg)
    assert mlflow.get_tracking_uri() == url
    got = _summary(remote)

    # Same edges, names, metrics (the toy is deterministic: same weights, same numbers).
    assert got == expected
    assert expected["trained_on"] == ["tiny-2rf/1"] and expected["pair_set_source"] == "tiny-1rf/1"
    assert expected["pair_sets_from_base"] == [True] and expected["reflow_inputs"][1] == [True]
    assert expected["digest_logged"] and expected["training_digest"]
    assert all(expected["checkpoints"].values())
    assert {"swd/euler_1", "straightness"} <= set(expected["metrics"]["tiny-2rf/1"])
    # The pair data is the same (every chunk's sha256): the two store digests differ only
    # through the source model ids they cover.
    a, b = (PairStore.open(r.stores[0].uri) for r in (local, remote))
    chunks = [[s.chunk_digest(i) for i in range(s.n_chunks)] for s in (a, b)]
    assert chunks[0] == chunks[1] and a.source["model_id"] != b.source["model_id"]

    # Everything went to the server: no SQLite DB or artifact folder in the runs folder, the
    # experiment uses the server's proxied root, checkpoints come through the download cache.
    assert not (remote_runs / "mlflow.db").exists() and not (remote_runs / "mlartifacts").exists()
    exp = mlflow.get_experiment(remote.experiment_id)
    assert exp.artifact_location.startswith("mlflow-artifacts:")
    base_id = remote.models[0].model_id
    ckpt = tracking.checkpoint_path(base_id)
    assert ckpt.startswith(str(remote_runs / "mlflow-cache" / base_id))
    assert checkpoint_sha256(ckpt) == local_base_sha
    assert b.source["model_uri"] == ckpt  # the store names a checkpoint that exists here

    # `rectiflow lineage` follows MLFLOW_TRACKING_URI to the server.
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    reflow_id = remote.models[1].model_id
    out = CliRunner().invoke(
        app, ["lineage", reflow_id, "--runs-dir", str(remote_runs)], terminal_width=400
    )
    assert out.exit_code == 0, out.output
    assert out.output.index(base_id) < out.output.index(b.uri) < out.output.index(reflow_id)


def test_unreachable_server_fails_fast_naming_the_setting(prefect_api, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = load_config(tiny_config_dict(tmp_path / "runs", **{"tracking.uri": dead}))
    with pytest.raises(tracking.TrackingServerError, match=f"{dead} .*tracking.uri") as e:
        pipeline(cfg)
    assert "mlflow server" in str(e.value)  # says what to do
    assert not (tmp_path / "runs" / "mlflow.db").exists()  # no silent fallback to SQLite


def test_tracking_uri_must_be_a_uri(tmp_path):
    with pytest.raises(ValueError, match=r"tracking\.uri: String should match pattern"):
        load_config(tiny_config_dict(tmp_path, **{"tracking.uri": "mlflow.internal:5000"}))
    cfg = load_config(tiny_config_dict(tmp_path, **{"tracking.uri": "https://mlflow.internal"}))
    assert cfg.tracking.uri == "https://mlflow.internal"
