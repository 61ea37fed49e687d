"""The CLI as a user runs it (a subprocess): bad input is one error line and exit 2, found before
any flow starts; damaged data met by a stage is exit 1 naming the chunk and its repair."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from flows.config import load_config
from flows.inputs import model_arg, store_args
from rf_core.config import ModelConfig
from rf_core.frechet import INCEPTION_ENV
from rf_core.models import build_model
from rf_core.training import load_checkpoint, save_checkpoint
from storage.generate import generate_chunks
from storage.pairstore import PairStore
from tests.helpers import make_runs_dir, tiny_config_dict, write_shape_images
from tests.procs import free_port

REPO = Path(__file__).resolve().parents[2]
TINY_MLP = ModelConfig(kind="mlp", data_shape=(2,), hidden=32, depth=2)
TINY_UNET = ModelConfig(kind="unet", data_shape=(3, 8, 8), num_classes=3, base_channels=8)
AUTO_STEPS, BIG_PROBE = {"method": "auto", "steps": 3}, {"method": "auto", "probe": 500}


def _cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


def _env(**extra: str) -> dict[str, str]:
    unset = ("PREFECT_API_URL", "RECTIFLOW_DEBUG", INCEPTION_ENV)
    env = {k: v for k, v in os.environ.items() if k not in unset}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def _rgb(data: dict, **overrides) -> dict:
    """Overrides of a tiny RGB set on disk (``data``) for the toy config."""
    return {"data": data, "model": TINY_UNET.model_dump(mode="json"), **overrides}


def _yaml(path: Path, runs: Path, **overrides) -> str:
    data = tiny_config_dict(runs, **overrides)
    if "moved" in path.name:  # a setting at its place before the execution: section
        data["pairs"]["task_runner"] = "thread"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory, mlflow_template) -> dict[str, str]:
    """Everything the bad inputs point at: a config, checkpoints good and bad, stores."""
    d = tmp_path_factory.mktemp("cli-errors")
    runs = make_runs_dir(d, mlflow_template)
    cfg_path = _yaml(d / "tiny.yaml", runs)
    torch.manual_seed(0)
    ckpt = save_checkpoint(d / "m.pt", build_model(TINY_MLP), extra={"k": 1})
    wide = ModelConfig(kind="mlp", data_shape=(2,), hidden=16, depth=2)
    save_checkpoint(d / "wide.pt", build_model(wide), extra={"k": 1})
    save_checkpoint(d / "distilled.pt", build_model(TINY_MLP), extra={"k": 2, "distilled": True})
    (d / "garbage.pt").write_bytes(b"not a checkpoint at all")
    (d / "notastore").mkdir()
    (d / "notastore" / "notes.txt").write_text("holiday photos")
    cfg = load_config(cfg_path)
    args = store_args(cfg, model_arg(str(ckpt), "model"))
    PairStore.create(str(d / "seed5.zarr"), **{**args, "seed": 5})
    PairStore.create(str(d / "partial.zarr"), **args)
    complete = PairStore.create(str(d / "complete.zarr"), **{**args, "n": 256})
    generate_chunks(load_checkpoint(ckpt)[0], complete)
    complete.finalize()
    dask = {"execution.task_runner": "dask", "execution.dask_address": f"127.0.0.1:{free_port()}"}
    shapes = {"dataset": "folder", "path": str(write_shape_images(d / "shapes", 1, size=8))}
    np.savez(d / "wrong.npz", x=np.zeros((4, 3, 16, 16), np.uint8))
    save_checkpoint(d / "rgb.pt", build_model(TINY_UNET), extra={"k": 1})
    (d / "torch").mkdir()  # an empty torch hub cache: no Inception weights anywhere
    return {
        "dir": str(d), "runs": str(runs), "cfg": cfg_path, "ckpt": str(ckpt),
        "invalid": _yaml(d / "invalid.yaml", runs, **{"pairs.n": -5}),
        "moved": _yaml(d / "moved.yaml", runs),
        "dask": _yaml(d / "dask.yaml", runs, **dask, **{"execution.dask_timeout_s": 1}),
        "dead": _yaml(d / "dead.yaml", runs, **{"tracking.uri": f"http://127.0.0.1:{free_port()}"}),
        "nofolder": _yaml(d / "nofolder.yaml", runs, **_rgb({**shapes, "path": f"{d}/nofolder"})),
        "npz": _yaml(d / "npz.yaml", runs, **_rgb({"dataset": "npz", "path": f"{d}/wrong.npz"})),
        "classes": _yaml(d / "classes.yaml", runs, **_rgb(shapes, **{"model.num_classes": 4})),
        "noweights": _yaml(d / "noweights.yaml", runs, **_rgb(shapes, **{
            "evaluate.inception_weights": f"{d}/missing.pth"})),
        "auto": _yaml(d / "auto.yaml", runs, **{"pairs.solver": {"method": "auto"}}),
        "autosteps": _yaml(d / "autosteps.yaml", runs, **{"pairs.solver": AUTO_STEPS}),
        "bigprobe": _yaml(d / "bigprobe.yaml", runs, **{"pairs.solver": BIG_PROBE}),
    }  # fmt: skip


# (case, command line with {placeholders} from `world`, what the error line must say)
CASES = [
    ("generate-missing-ckpt", "generate {cfg} --model {dir}/missing.pt",
     "model: '{dir}/missing.pt' is neither an MLflow model"),
    ("generate-garbage-ckpt", "generate {cfg} --model {dir}/garbage.pt",
     "model: checkpoint {dir}/garbage.pt is unreadable"),
    ("generate-other-seed", "generate {cfg} --model {ckpt} --store {dir}/seed5.zarr",
     "store: cannot resume pair store {dir}/seed5.zarr: it was made differently (seed: store "
     "has 5"),
    ("generate-not-a-store", "generate {cfg} --model {ckpt} --store {dir}/notastore",
     "store: {dir}/notastore holds something that is not a pair store"),
    ("generate-unknown-id", "generate {cfg} --model models:/m-feed",
     "model: cannot resolve 'models:/m-feed'"),
    # A runs folder without mlflow.db: MLflow creates its tables first, and says nothing of it.
    ("generate-unknown-id-new-runs", "generate {cfg} --model models:/m-feed --runs-dir {dir}/new",
     "model: cannot resolve 'models:/m-feed' in MLflow at sqlite:///{dir}/new/mlflow.db"),
    ("generate-other-architecture", "generate {cfg} --model {dir}/wide.pt",
     "model: checkpoint {dir}/wide.pt holds another architecture"),
    ("run-missing-config", "run {dir}/nope.yaml", "config file {dir}/nope.yaml does not exist"),
    ("run-invalid-field", "run {invalid}", "invalid config: pairs.n: Input should be greater"),
    ("run-moved-field", "run {moved}", "pairs.task_runner moved to execution.task_runner"),
    ("run-dask-unreachable", "run {dask}", "execution.dask_address: no Dask scheduler answered"),
    ("run-tracking-server-down", "run {dead}", "tracking: MLflow tracking server http://127.0.0.1:"),
    ("train-base-missing-config", "train-base {dir}/nope.yaml", "nope.yaml does not exist"),
    ("run-missing-folder", "run {nofolder}",
     "data.path: image folder {dir}/nofolder does not exist"),
    ("train-base-npz-wrong-shape", "train-base {npz}",
     "data.path: npz file {dir}/wrong.npz: array 'x' has shape (4, 3, 16, 16)"),
    ("train-base-other-classes", "train-base {classes}",
     "model.num_classes is 4 but {dir}/shapes has 3 classes (circle, square, triangle)"),
    ("run-no-inception-weights", "run {noweights}",
     "evaluate.inception_weights: Inception FID weights weights-inception-2015-12-05"),
    ("evaluate-no-inception-weights", "evaluate {noweights} --model {dir}/rgb.pt",
     "evaluate.inception_weights: Inception FID weights weights-inception-2015-12-05"),
    ("train-reflow-incomplete", "train-reflow {cfg} --store {dir}/partial.zarr",
     "store: pair store {dir}/partial.zarr is not complete"),
    ("train-reflow-missing-store", "train-reflow {cfg} --store {dir}/none.zarr",
     "store: no pair store at {dir}/none.zarr"),
    ("train-reflow-bad-init", "train-reflow {cfg} --store {dir}/complete.zarr --init-model "
     "{dir}/garbage.pt", "init_model: checkpoint {dir}/garbage.pt is unreadable"),
    ("distill-distilled-teacher", "distill {cfg} --store {dir}/complete.zarr --init-model "
     "{dir}/distilled.pt", "init_model: '{dir}/distilled.pt' is already distilled"),
    ("evaluate-unknown-model", "evaluate {cfg} --model {ckpt} --model m-0123",
     "models[1]: cannot resolve 'm-0123'"),
    ("lineage-unknown-model", "lineage m-0123 --runs-dir {runs}", "MODEL_OR_STORE: cannot resolve"),
    ("lineage-no-runs", "lineage m-0123 --runs-dir {dir}/elsewhere", "--runs-dir: {dir}/elsewhere"),
    ("compare-unknown-run", "compare 0123abcd --runs-dir {runs}",
     "RUN_OR_MODEL: '0123abcd' is neither a model"),
    ("pairs-status-not-a-store", "pairs status {dir}/notastore",
     "STORE: {dir}/notastore holds something that is not a pair store"),
    ("pairs-verify-missing", "pairs verify {dir}/none.zarr", "STORE: no pair store at"),
    ("generate-auto-with-steps", "generate {autosteps} --model {ckpt}",
     "invalid config: pairs.solver: Value error, method 'auto' chooses steps itself"),
    ("generate-probe-past-chunk", "generate {bigprobe} --model {ckpt}",
     "invalid config: pairs: Value error, solver['probe'] = 500 is larger than the first chunk"),
    ("generate-auto-on-a-pinned-store", "generate {auto} --model {ckpt} --store {dir}/partial.zarr",
     "store: cannot resume pair store {dir}/partial.zarr: its solver dopri5_tol0.0001 was pinned"),
    ("pairs-probe-tolerance", "pairs probe {ckpt} --tolerance 0",
     "--tolerance: solver['tolerance'] must be a float with 0 < tolerance < 1"),
    ("pairs-probe-past-chunk", "pairs probe {ckpt} --config {cfg} --probe 500",
     "--probe: solver['probe'] = 500 is larger than the first chunk (128 samples"),
    ("pairs-probe-not-a-file", "pairs probe models:/m-feed",
     "MODEL: 'models:/m-feed' is not a checkpoint file"),
]  # fmt: skip


@pytest.fixture(scope="module")
def outcomes(world) -> dict[str, subprocess.CompletedProcess]:
    """Every case run once as its own process, two or three at a time (each pays the imports)."""

    def one(case: tuple[str, str, str]) -> subprocess.CompletedProcess:
        env = _env(TORCH_HOME=f"{world['dir']}/torch")
        return _cli(case[1].format(**world).split(), Path(world["dir"]), env, timeout=240)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip((c[0] for c in CASES), pool.map(one, CASES), strict=True))


@pytest.mark.slow  # ~20 CLI processes (a few seconds of imports each), run 3 at a time
@pytest.mark.parametrize(("case", "argv", "says"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2_before_any_flow(outcomes, world, case, argv, says):
    out = outcomes[case]
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-3000:]
    assert lines == [lines[0]] and lines[0].startswith("error: "), out.stderr[-3000:]
    assert says.format(**world) in lines[0]
    assert out.stdout == ""  # nothing ran: no progress, no Prefect server, no table
    for internal in (
        "Traceback", "Prefect", "GroupNotFoundError", "weights_only", "LocalStore(",
        "HTTPConnectionPool", "urllib3", "database tables",
    ):  # fmt: skip
        assert internal not in out.stderr


def test_bad_inputs_changed_nothing(outcomes, world):
    d = Path(world["dir"])
    assert not (d / "runs" / "stores").exists() and not (d / "runs" / "checkpoints").exists()
    assert PairStore.open(str(d / "seed5.zarr")).missing_chunks() == list(range(8))
    assert sorted(p.name for p in (d / "notastore").iterdir()) == ["notes.txt"]
    assert not (d / "elsewhere" / "mlflow.db").exists()


@pytest.mark.slow  # two real flow runs: the stage starts, meets the damage and fails
def test_damaged_chunk_met_by_a_stage_exits_1_naming_chunk_and_repair(prefect_api, world):
    d = Path(world["dir"])
    damaged = d / "damaged.zarr"
    shutil.copytree(d / "complete.zarr", damaged)
    x1 = damaged / PairStore.open(str(damaged)).chunk_key("x1", 1)
    data = bytearray(x1.read_bytes())
    data[20] ^= 0xFF
    x1.write_bytes(bytes(data))
    argv = ["train-reflow", world["cfg"], "--store", str(damaged)]
    out = _cli(argv, d, _env(PREFECT_API_URL=prefect_api))
    assert out.returncode == 1, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage train_reflow (MLflow run "), last
    assert f"pair store {damaged}: chunk 1 is corrupt" in last
    assert f"rectiflow pairs verify --repair {damaged}" in last
    # Prefect still logs the failure, as one line: its traceback only with --debug.
    assert "Encountered exception during execution: ChunkCorruptError" in out.stderr
    assert "Traceback" not in out.stderr and 'File "' not in out.stderr, out.stderr[-3000:]
    debug = _cli(argv, d, _env(PREFECT_API_URL=prefect_api, RECTIFLOW_DEBUG="1"))
    assert debug.returncode == 1 and debug.stderr.strip().splitlines()[-1].startswith("error:")
    # Prefect's traceback of the task and of the flow run, then the CLI's own.
    assert debug.stderr.count("Traceback (most recent call last)") >= 3, debug.stderr[-3000:]


def test_debug_shows_the_traceback_of_bad_input(world):
    d, argv = (
        Path(world["dir"]),
        ["generate", world["cfg"], "--model", f"{world['dir']}/garbage.pt"],
    )
    for out in (
        _cli(["--debug", *argv], d, _env()),
        _cli(argv, d, _env(RECTIFLOW_DEBUG="1")),
    ):
        assert out.returncode == 2
        head, _, last = out.stderr.strip().rpartition("\n")
        assert last.startswith("error: model: checkpoint") and "unreadable" in last
        # The whole chain: torch's own error under ours.
        assert "Traceback (most recent call last)" in head and "UnpicklingError" in head
