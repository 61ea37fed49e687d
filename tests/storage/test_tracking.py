"""storage.tracking against a real MLflow SQLite store (a per-test copy of a migrated DB)."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
import torch

from rf_core.config import ModelConfig
from rf_core.models import build_model
from rf_core.training import checkpoint_sha256, load_checkpoint, save_checkpoint
from storage import tracking
from tests.procs import free_port


@pytest.fixture
def exp(runs_dir, monkeypatch, tmp_path) -> str:
    monkeypatch.chdir(tmp_path)  # artifacts must not follow the cwd
    tracking.configure(runs_dir)
    return tracking.ensure_experiment("unit", runs_dir)


@pytest.fixture
def ckpt(tmp_path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="mlp", data_shape=(2,), hidden=16, depth=1))
    return model, save_checkpoint(tmp_path / "m.pt", model, extra={"k": 1})


def test_tracking_uri_defaults_to_sqlite_in_runs_dir_and_env_overrides(tmp_path, monkeypatch):
    assert tracking.tracking_uri(tmp_path / "r") == f"sqlite:///{tmp_path / 'r' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.tracking_uri(tmp_path / "r") == "http://mlflow.example:5000"
    assert tracking.ui_command(tmp_path) == "open http://mlflow.example:5000"


def test_config_uri_wins_over_env_and_env_is_left_as_the_user_set_it(runs_dir, monkeypatch):
    sqlite = f"sqlite:///{runs_dir / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.configure(runs_dir, sqlite) == sqlite == mlflow.get_tracking_uri()
    assert "MLFLOW_TRACKING_URI" not in os.environ  # MLflow exports it; not our choice to keep
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere.example:5000")
    assert tracking.tracking_uri(runs_dir, sqlite) == sqlite
    assert tracking.configure(runs_dir, sqlite) == sqlite  # no probe of the env's server
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://elsewhere.example:5000"
    assert tracking.ui_command(runs_dir, "https://mlflow.example") == "open https://mlflow.example"


@pytest.mark.parametrize("source", ["env", "config"])
def test_unreachable_server_is_a_clear_error(runs_dir, monkeypatch, source):
    dead = f"http://127.0.0.1:{free_port()}"
    before = tracking.configure(runs_dir)
    if source == "env":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    setting = "MLFLOW_TRACKING_URI" if source == "env" else "tracking.uri"
    with pytest.raises(tracking.TrackingServerError, match=f"{dead} \\(from {setting}") as e:
        tracking.configure(runs_dir, dead if source == "config" else None)
    assert "did not answer" in str(e.value) and "unset it" in str(e.value)
    assert mlflow.get_tracking_uri() == before  # nothing switched to the dead server
    # In the user's words: what happened, not the HTTP client's exception text.
    assert "connection refused" in str(e.value)
    for internal in ("HTTPConnectionPool", "NewConnectionError", "Max retries", "/api/2.0"):
        assert internal not in str(e.value)


class NotMlflow(BaseHTTPRequestHandler):
    """A web server that is not an MLflow tracking server."""

    def do_GET(self) -> None:
        self.send_error(404 if "mlflow" in self.path else 200)

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_answers_as_something_else_is_named_so(runs_dir):
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotMlflow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    uri = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(tracking.TrackingServerError, match="not answer as an MLflow") as e:
            tracking.configure(runs_dir, uri)
    finally:
        server.shutdown()
        thread.join()
    assert f"{uri} (from tracking.uri in the config)" in str(e.value) and "HTTP 404" in str(e.value)


def test_experiment_has_absolute_artifact_root_under_runs(exp, runs_dir, tmp_path):
    assert mlflow.get_experiment(exp).artifact_location == (runs_dir / "mlartifacts/unit").as_uri()
    assert tracking.ensure_experiment("unit", runs_dir) == exp  # idempotent
    mlflow.delete_experiment(exp)
    with pytest.raises(ValueError, match="experiment 'unit' is deleted"):
        tracking.ensure_experiment("unit", runs_dir)


def test_pt2_model_is_logged_registered_and_checkpoint_kept(exp, ckpt, runs_dir):
    model, path = ckpt
    sha = checkpoint_sha256(path)
    with tracking.stage_run(exp, "train_base", flow_run_id="fr-1") as run_id:
        ref = tracking.log_trained_model(model, path, sha, "unit-1rf", 1, fmt="pt2")
    assert ref.registered == "unit-1rf/1" and ref.run_id == run_id and ref.k == 1
    assert ref.checkpoint.startswith(str(runs_dir / "mlartifacts"))
    assert checkpoint_sha256(ref.checkpoint) == sha
    loaded, _ = load_checkpoint(ref.checkpoint)  # weights_only=True
    exported = mlflow.pytorch.load_model(ref.uri)  # the pt2 graph, batch size stays dynamic
    x, t, y = torch.randn(5, 2), torch.rand(5), torch.full((5,), -1)
    with torch.no_grad():
        assert torch.allclose(exported(x, t, y), model(x, t, y), atol=1e-6)
        assert torch.equal(loaded(x, t, y), model(x, t, y))
    # Every way of naming the model resolves to the same checkpoint.
    for name in (ref.model_id, ref.uri, "models:/unit-1rf/1"):
        assert tracking.resolve_model(name) == tracking.model_ref(ref.model_id)
    assert tracking.run_output_model(run_id).model_id == ref.model_id
    assert mlflow.get_run(run_id).data.tags[tracking.TAG_FLOW_RUN] == "fr-1"


@pytest.mark.parametrize("ref", ["m-0000", "models:/m-0000", "models:/nope/1", "models:/x"])
def test_unknown_models_name_the_field(exp, ref):
    with pytest.raises(ValueError, match=r"^init_model: cannot resolve"):
        tracking.resolve_model(ref, "init_model")


def test_stage_run_nests_under_parent_and_fails_on_error(exp):
    with tracking.stage_run(exp, "pipeline") as parent:
        with tracking.stage_run(exp, "evaluate", parent_run_id=parent) as child:
            pass
        with pytest.raises(RuntimeError), tracking.stage_run(exp, "evaluate") as failed:
            raise RuntimeError("boom")
    assert mlflow.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert mlflow.get_run(failed).info.status == "FAILED"
    # Outside any active run, parent_run_id still nests (a stage flow in another thread).
    with tracking.stage_run(exp, "evaluate", parent_run_id=parent) as detached:
        pass
    assert mlflow.get_run(detached).data.tags["mlflow.parentRunId"] == parent


def test_log_metrics_batches_many_rows(exp):
    with tracking.stage_run(exp, "train_base") as run_id:
        tracking.log_metrics([(s, {"loss": 1.0 / (s + 1), "lr": 0.1}) for s in range(1500)], run_id)
    history = mlflow.MlflowClient().get_metric_history(run_id, "loss")
    assert len(history) == 1500 and history[-1].step == 1499


def test_reuse_and_unfinished_runs_by_stage_key(exp):
    with tracking.stage_run(exp, "train_base", tags={tracking.TAG_KEY: "k1"}) as done:
        pass
    stale = mlflow.start_run(experiment_id=exp, tags={tracking.TAG_STAGE: "train_base",
                                                      tracking.TAG_KEY: "k1"})  # fmt: skip
    mlflow.end_run(status="RUNNING")  # leave it as a killed process would
    assert tracking.find_finished_stage(exp, "train_base", "k1") == done
    assert tracking.find_finished_stage(exp, "train_base", "k2") is None
    assert tracking.mark_unfinished(exp, "train_base", "k1") == 1
    assert mlflow.get_run(stale.info.run_id).info.status == "KILLED"


def test_pair_set_lineage_queries(exp, ckpt, tmp_path):
    model, path = ckpt
    sha = checkpoint_sha256(path)
    digest = "ab" * 32
    store = str(tmp_path / "pairs.zarr")
    with tracking.stage_run(exp, "train_base"):
        base = tracking.log_trained_model(model, path, sha, "unit-1rf", 1, fmt="pickle")
    tags = {tracking.TAG_SOURCE: base.uri}
    with tracking.stage_run(exp, "generate_pairs", tags=tags):
        tracking.log_model_input(base.model_id)
        tracking.log_pair_set(store, "pairs.zarr", digest, "generated")
    with tracking.stage_run(exp, "train_reflow"):
        tracking.log_pair_set(store, "pairs.zarr", digest, "training")
        tracking.log_model_input(base.model_id)
        second = tracking.log_trained_model(model, path, sha, "unit-2rf", 2, fmt="pickle")
    with tracking.stage_run(exp, "evaluate"):
        tracking.log_model_metrics({"fd/euler_1": 3.5}, second.model_id)

    (ps,) = tracking.pair_sets_from_model(base.model_id)
    assert (ps.uri, ps.digest) == (store, digest[:32])
    assert tracking.pair_sets_from_model(second.model_id) == []
    assert tracking.models_trained_on(digest) == [second.model_id]
    assert tracking.models_trained_on(digest[:32]) == [second.model_id]
    assert tracking.pair_set_source(digest) == base.model_id
    inits, sets = tracking.training_inputs(second.model_id)
    assert inits == [base.model_id] and [s.digest for s in sets] == [digest[:32]]
    assert tracking.model_metrics(second.model_id) == {"fd/euler_1": 3.5}
    assert tracking.model_metrics(base.model_id) == {}


def test_evaluations_per_run_and_per_model(exp, ckpt):
    model, path = ckpt
    sha = checkpoint_sha256(path)
    with tracking.stage_run(exp, "pipeline") as parent:
        with tracking.stage_run(exp, "train_base") as train_run:
            a = tracking.log_trained_model(model, path, sha, "unit-1rf", 1, fmt="pickle")
        with tracking.stage_run(exp, "distill") as distill_run:
            b = tracking.log_trained_model(model, path, sha, "u-d", 1, "pickle", distilled=True)
        with tracking.stage_run(exp, "evaluate") as ev1:
            for ref, fd in ((a, 2.0), (b, 1.5)):
                tracking.log_model_input(ref.model_id)
                tracking.log_model_metrics({"fd/euler_1": fd, "nfe/dopri5": 20.0}, ref.model_id)
    with tracking.stage_run(exp, "evaluate") as ev2:  # a later, separate evaluation of ``a``
        tracking.log_model_input(a.model_id)
        tracking.log_model_metrics({"fd/euler_1": 1.0}, a.model_id)

    assert b.distilled and tracking.model_ref(b.model_id).distilled and b.name == "1rf-distill"
    # A pipeline run expands to what its own evaluate stage logged, not later evaluations.
    got = {e.model_id: e for e in tracking.evaluations(parent)}
    assert got[a.model_id].metrics == {"fd/euler_1": 2.0, "nfe/dopri5": 20.0}
    assert got[b.model_id].name == "1rf-distill" and got[b.model_id].run_id == ev1
    # A model, or the run that trained it, gives its latest evaluation.
    for ref in (a.model_id, f"models:/{a.model_id}", "models:/unit-1rf/1", train_run):
        (e,) = tracking.evaluations(ref)
        assert (e.run_id, e.metrics) == (ev2, {"fd/euler_1": 1.0})
    (e,) = tracking.evaluations(distill_run)
    assert e.metrics["fd/euler_1"] == 1.5
    # Unknown ids and runs without evaluation metrics are errors naming the argument.
    with tracking.stage_run(exp, "train_base") as bare:
        pass
    for bad, msg in (("nope", "neither a model"), ("m-nope", "cannot resolve"), (bare, "no eval")):
        with pytest.raises(ValueError, match=f"RUN_OR_MODEL: .*{msg}"):
            tracking.evaluations(bad)


def test_classifier_registry_lookup_by_key(exp, tmp_path):
    from rf_core.classifier import DigitClassifier, save_classifier

    assert tracking.find_classifier("mnist5k", "k1") is None  # nothing registered yet
    clf = DigitClassifier((1, 28, 28), 10, 8, 16)
    path = save_classifier(tmp_path / "clf.pt", clf)
    with tracking.stage_run(exp, "evaluate"):
        ref = tracking.log_classifier(clf, path, "mnist5k", "k1", "d" * 64)
    assert ref.registered == "mnist5k-classifier/1"
    assert checkpoint_sha256(ref.checkpoint) == checkpoint_sha256(path)
    assert tracking.find_classifier("mnist5k", "k1") == ref
    assert tracking.find_classifier("mnist5k", "k2") is None
    assert tracking.find_classifier("fashion", "k1") is None
