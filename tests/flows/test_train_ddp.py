"""Data-parallel training stages on the CPU (gloo): torchrun's processes and the stage's own.

One rank is killed with SIGKILL mid-training; running the same stage again resumes from the
state rank 0 wrote and completes. The toy's 2-RF trained by two processes reaches the straightness
of one process: over 4 seeds of the same recipe (tests/flows, reflow.train of tiny_config_dict
on this store) one process gave S = 1.6274 +- 0.0028 and two 1.6267 +- 0.0030 (1-RF: 2.05), so
the test allows 0.01, about 3.5 standard deviations of the seed spread.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml

from flows.config import load_config
from rf_core.metrics import straightness
from rf_core.solvers import solve_ode
from rf_core.training import fit, load_checkpoint
from storage import tracking
from storage.pairstore import PairStore
from storage.stream import PairStream
from tests.flows.training_kit import cli_env, final_weights, newest_state, pair_store, stage_runs
from tests.helpers import make_runs_dir, tiny_config_dict

TORCHRUN = Path(sys.executable).with_name("torchrun")
TOLERANCE = 0.01  # straightness, one process vs two (see the module docstring)
DDP = {"execution.devices": ["cpu", "cpu"], "testing.step_delay_s": 0.05}


def rank_process(parent: int, marker: str) -> psutil.Process:
    """The descendant of ``parent`` whose command line contains ``marker``, once it exists."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for p in psutil.Process(parent).children(recursive=True):
            try:
                if marker in " ".join(p.cmdline()):
                    return p
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.1)
    raise AssertionError(f"no process {marker!r} under {parent}")


def wait_for_state(runs: Path, stage: str, step: int, alive) -> None:
    deadline = time.monotonic() + 300
    while newest_state(runs, stage) < step:
        assert alive(), f"training ended before its state of step {step}"
        assert time.monotonic() < deadline, f"no state of step {step} in time"
        time.sleep(0.05)


def toy_straightness(model: torch.nn.Module) -> float:
    x0 = torch.randn(1000, 2, generator=torch.Generator().manual_seed(99))
    x1 = solve_ode(model, x0, method="dopri5", rtol=1e-4, atol=1e-4).x1
    return straightness(model, x0, x1)


@pytest.mark.slow
def test_torchrun_reflow_survives_a_killed_rank_and_matches_one_process(
    prefect_api, tmp_path, runs_dir
):
    cfg = tiny_config_dict(runs_dir, **DDP, **{"reflow.train.checkpoint_every": 20})
    store = pair_store(tmp_path, cfg)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "flows.cli"]
    cmd += ["train-reflow", str(path), "--store", store]
    env = cli_env(prefect_api)
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        wait_for_state(runs_dir, "train_reflow", 40, lambda: proc.poll() is None)
        ranks = [p for p in psutil.Process(proc.pid).children() if "flows.cli" in p.cmdline()]
        follower = next(p for p in ranks if p.environ().get("RANK") == "1")
        follower.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=120) != 0  # torchrun stops the other rank and fails
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    killed_at = newest_state(runs_dir, "train_reflow")
    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"(step {killed_at})" in rerun.stderr  # "train_reflow: resuming from ... (step N)"

    attempts = stage_runs(runs_dir, "train_reflow")  # only rank 0 talks to MLflow: one each
    assert [r.info.status for r in attempts][-1] == "FINISHED" and len(attempts) == 2
    assert attempts[0].info.status in {"FAILED", "KILLED"}
    done = attempts[1].data
    assert int(done.tags[tracking.TAG_RESUMED_STEP]) == killed_at
    assert (done.params["train.processes"], done.params["train.micro_batch"]) == ("2", "64")
    assert done.params["train.effective_batch"] == "128"
    two = load_checkpoint(tracking.run_output_model(attempts[1].info.run_id).checkpoint)[0]

    base = PairStore.open(store).source["model_uri"]  # the 1-RF checkpoint
    one = load_checkpoint(base)[0].train()  # 2-RF trained by one process, as the stage would
    one = fit(one, PairStream(store, 128, seed=0), load_config(cfg).reflow.train).model
    s_one, s_two = toy_straightness(one), toy_straightness(two)
    assert abs(s_two - s_one) < TOLERANCE, (s_one, s_two)
    assert s_two < toy_straightness(load_checkpoint(base)[0]) - 0.3  # it really reflowed


@pytest.mark.slow
def test_stage_started_ranks_resume_after_a_killed_follower(
    prefect_api, tmp_path, runs_dir, mlflow_template
):
    from flows.train import train_base

    over = {**DDP, "execution.train_devices": 2, "base.checkpoint_every": 20}
    cfg = load_config(tiny_config_dict(runs_dir, **over))
    failed: list[BaseException] = []

    def attempt() -> None:
        try:
            train_base(cfg)
        except BaseException as e:  # the stage fails when a rank dies
            failed.append(e)

    first = threading.Thread(target=attempt)
    first.start()
    wait_for_state(runs_dir, "train_base", 40, first.is_alive)
    rank_process(os.getpid(), "tasks.ddp").send_signal(signal.SIGKILL)
    first.join(timeout=180)
    assert not first.is_alive() and failed, "the stage went on without its follower"
    killed_at = newest_state(runs_dir, "train_base")
    resumed = train_base(cfg)  # starts a new follower, both resume from rank 0's state

    attempts = stage_runs(runs_dir, "train_base")
    assert [r.info.status for r in attempts] == ["FAILED", "FINISHED"]
    assert int(attempts[1].data.tags[tracking.TAG_RESUMED_STEP]) == killed_at
    two = final_weights(resumed.run_id)
    (tmp_path / "one").mkdir()
    single = load_config(tiny_config_dict(make_runs_dir(tmp_path / "one", mlflow_template)))
    one = final_weights(train_base(single).run_id)
    # The same samples, noise and times in every step (rf_core.batches): the two processes'
    # averaged gradients differ from one process's only in the order of the sums.
    for k, v in one.items():
        torch.testing.assert_close(two[k], v, rtol=1e-4, atol=1e-5, msg=k)
