"""The `rectiflow` CLI: bad configs fail before any work; a killed pipeline resumes its store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from typer.testing import CliRunner

from flows.cli import app
from flows.config import load_config
from storage import tracking
from storage.pairstore import PairStore, PairStoreError
from tests.helpers import tiny_config_dict

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"data.dataset": "imagenet"}, "data.dataset"),
        ({"pairs.n": -5}, "pairs.n"),
        ({"pairs.chunk": 0}, "pairs.chunk"),
        ({"base.steps": -1}, "base.steps"),
        ({"reflow.rounds": -1}, "reflow.rounds"),
        ({"model.data_shape": [1, 28, 28], "model.kind": "unet"}, "model.data_shape"),
        ({"pairs.solver": {"method": "euler"}}, "pairs.solver"),
        ({"pairs.colour": "red"}, "pairs.colour"),
    ],
)
def test_bad_config_fails_before_any_work(tmp_path, override, field):
    runs = tmp_path / "runs"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(runs, **override)))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    assert field in result.output and str(path) in result.output
    assert not runs.exists()  # nothing was created: no tracking DB, no store


def test_missing_config_file_is_named(tmp_path):
    result = CliRunner().invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "nope.yaml does not exist" in result.output


def test_generate_with_unknown_model_exits_2(prefect_api, tiny_yaml):
    result = CliRunner().invoke(app, ["generate", str(tiny_yaml), "--model", "models:/m-feed"])
    assert result.exit_code == 2
    assert "model: cannot resolve 'models:/m-feed'" in result.output


def test_train_reflow_refuses_incomplete_store(prefect_api, tiny_yaml, runs_dir):
    store = PairStore.create(
        str(runs_dir / "partial.zarr"), n=256, chunk=128, sample_shape=(2,), seed=0,
        source={"checkpoint_sha256": "0" * 64, "model_id": None, "model_uri": "x", "k": 1},
        solver={"method": "dopri5", "rtol": 1e-4, "atol": 1e-4}, dataset="8gaussians",
        num_classes=0,
    )  # fmt: skip
    result = CliRunner().invoke(app, ["train-reflow", str(tiny_yaml), "--store", store.uri])
    assert result.exit_code == 2
    assert "store: pair store" in result.output and "not complete" in result.output
    args = ["distill", str(tiny_yaml), "--store", store.uri, "--init-model", "m-feed"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "store: pair store" in result.output and "not complete" in result.output


def _env(api_url: str) -> dict[str, str]:
    return {**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(REPO)}


def _wait_for_partial_store(runs: Path, proc: subprocess.Popen, timeout: float) -> PairStore:
    """Poll the runs folder until a store has some, but not all, chunks marked done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the pipeline ended before it could be killed"
        for path in (runs / "stores").glob("*.zarr"):
            try:
                store = PairStore.open(str(path))
                done = store.n_chunks - len(store.missing_chunks())
            except (PairStoreError, KeyError, ValueError):
                continue  # still being created
            if 3 <= done < store.n_chunks:
                return store
        time.sleep(0.1)
    raise AssertionError("no partially generated store appeared in time")


@pytest.mark.slow
def test_killed_pipeline_resumes_generation(prefect_api, tmp_path, runs_dir):
    overrides = {
        "pairs.n": 2048,  # 16 chunks
        "execution.progress_every": 1,
        "testing.chunk_delay_s": 0.3,  # a window to kill in, after every chunk
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(runs_dir, **overrides)))
    cmd = [sys.executable, "-m", "flows.cli", "run", str(path)]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(prefect_api), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        store = _wait_for_partial_store(runs_dir, proc, timeout=240)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole process group, as a crash would
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = sorted(set(range(store.n_chunks)) - set(store.missing_chunks()))
    files = {i: Path(store.uri) / store.chunk_key("x1", i) for i in done}
    stamps = {i: (f.stat().st_ino, f.stat().st_mtime_ns) for i, f in files.items()}

    rerun = subprocess.run(
        cmd, cwd=tmp_path, env=_env(prefect_api), capture_output=True, text=True, timeout=400
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "NFE 1" in rerun.stdout and "mlflow ui --backend-store-uri sqlite:///" in rerun.stdout

    resumed = PairStore.open(store.uri)
    assert resumed.is_finalized
    # Chunks done before the kill were not rewritten (same file object, same mtime).
    assert {i: (f.stat().st_ino, f.stat().st_mtime_ns) for i, f in files.items()} == stamps

    tracking.configure(runs_dir)
    exp = mlflow.get_experiment_by_name("tiny")
    gen = mlflow.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{tracking.TAG_STAGE}` = 'generate_pairs'",
        order_by=["attributes.start_time ASC"],
        output_format="list",
    )
    assert [r.info.status for r in gen] == ["KILLED", "FINISHED"]
    assert gen[1].data.metrics["chunks_resumed"] == len(done)
    assert gen[1].data.metrics["chunks_generated"] == store.n_chunks - len(done)
    # The 1-RF of the killed run was reused, so the store's source model is the same.
    assert len(tracking.pair_sets_from_model(resumed.source["model_id"])) == 1

    # Same digest as an uninterrupted generation from the same model.
    from flows.generate import generate_pairs

    cfg = load_config(tiny_config_dict(runs_dir, **{"pairs.n": 2048}))
    ref = generate_pairs(cfg, model=resumed.source["model_id"], store=str(tmp_path / "ref.zarr"))
    assert ref.digest == resumed.attrs["digest"]
