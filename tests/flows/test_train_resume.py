"""Training stages killed with SIGKILL and run again: the final model equals an uninterrupted
run's bit for bit, MLflow holds each logged step's loss once, damaged states are skipped by name.

Every attempt is a real ``python -m flows.cli`` process against the session's Prefect server and
a real MLflow SQLite store; ``testing.step_delay_s`` stretches the training so that a kill lands
at a random point between two training states.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from flows.config import load_config
from storage import tracking
from tests.flows.training_kit import (
    assert_same_weights,
    cli_env,
    final_weights,
    loss_history,
    newest_state,
    pair_store,
    stage_runs,
)
from tests.helpers import make_runs_dir, tiny_config_dict

EVERY, DELAY = 20, 0.05  # a state every 20 steps; 1 s between two states


def kill_after(cmd: list[str], cwd: Path, env: dict, runs: Path, stage: str, step: int) -> int:
    """Start ``cmd``, wait until it has written the state of ``step``, kill its process group
    with SIGKILL at a random point of the next interval; returns the newest state then."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while newest_state(runs, stage) < step:
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before step {step}"
            assert time.monotonic() < deadline, f"no state of step {step} in time"
            time.sleep(0.05)
        time.sleep(random.uniform(0.0, EVERY * DELAY))
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return newest_state(runs, stage)


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 3])
    else:  # flip one byte in the middle
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x55]) + data[i + 1 :])


def killed_three_times(api: str, tmp: Path, cfg: dict, args: list[str], stage: str, how: str):
    """Kill the stage three times at random steps, damage its newest state, run it to the end.

    Returns:
        (the final attempt's stdout + stderr, the step of the damaged state).
    """
    runs = Path(cfg["runs_dir"])
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "flows.cli", *args[:1], str(path), *args[1:]]
    newest = 0
    for step in sorted(random.sample(range(EVERY, 6 * EVERY, EVERY), 3)):
        # Each attempt must get past the state it resumes, so that it really trains.
        newest = kill_after(cmd, tmp, cli_env(api), runs, stage, max(step, newest + EVERY))
    folder = next((runs / "checkpoints" / "states").glob(f"*/{stage}-*"))
    damage(folder / f"state-{newest}.pt", how)
    env = cli_env(api)
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr, newest


def uninterrupted(run_id: str) -> tuple[list[tuple[int, float]], dict[str, torch.Tensor]]:
    """The loss curve and final weights of a run (in the tracking store in use now)."""
    return loss_history(run_id), final_weights(run_id)


def check_attempts(runs: Path, stage: str, damaged: int, reference: tuple, steps: int) -> None:
    """Three killed runs then a finished one that resumed the state before the damaged one,
    its loss curve each logged step once and equal to the uninterrupted run's, same weights."""
    attempts = stage_runs(runs, stage)
    assert [r.info.status for r in attempts] == ["KILLED"] * 3 + ["FINISHED"]
    last = attempts[-1]
    assert int(last.data.tags[tracking.TAG_RESUMED_STEP]) == damaged - EVERY
    writer = last.data.tags[tracking.TAG_RESUMED_FROM]
    assert writer in {r.info.run_id for r in attempts[:3]}
    assert mlflow.get_run(writer).data.tags[tracking.TAG_RESUMED_BY] == last.info.run_id
    history = loss_history(last.info.run_id)
    assert [s for s, _ in history] == list(range(25, steps + 1, 25))
    assert history == reference[0]
    assert_same_weights(final_weights(last.info.run_id), reference[1])
    assert not list((runs / "checkpoints" / "states").glob(f"*/{stage}-*/state-*"))  # cleared


@pytest.mark.slow
def test_train_base_killed_three_times_resumes_bit_identically(
    prefect_api, tmp_path, runs_dir, mlflow_template
):
    from flows.train import train_base

    over = {"base.checkpoint_every": EVERY, "testing.step_delay_s": DELAY}
    out, damaged = killed_three_times(
        prefect_api, tmp_path, tiny_config_dict(runs_dir, **over), ["train-base"],
        "train_base", "flip",
    )  # fmt: skip
    assert f"training state {runs_dir}/checkpoints/states/tiny/train_base-" in out
    assert f"state-{damaged}.pt skipped: damaged" in out
    (tmp_path / "ref").mkdir()
    ref_runs = make_runs_dir(tmp_path / "ref", mlflow_template)
    ref = train_base(load_config(tiny_config_dict(ref_runs)))  # uninterrupted, default interval
    check_attempts(runs_dir, "train_base", damaged, uninterrupted(ref.run_id), 150)


@pytest.mark.slow
def test_train_reflow_killed_three_times_resumes_bit_identically(
    prefect_api, tmp_path, runs_dir, mlflow_template
):
    from flows.train import train_reflow

    over = {"reflow.train.checkpoint_every": EVERY, "testing.step_delay_s": DELAY}
    cfg = tiny_config_dict(runs_dir, **over)
    store = pair_store(tmp_path, cfg)
    out, damaged = killed_three_times(
        prefect_api, tmp_path, cfg, ["train-reflow", "--store", store], "train_reflow",
        "truncate",
    )  # fmt: skip
    assert f"state-{damaged}.pt skipped: truncated" in out
    (tmp_path / "ref").mkdir()
    ref_runs = make_runs_dir(tmp_path / "ref", mlflow_template)
    ref = train_reflow(load_config(tiny_config_dict(ref_runs)), store=store)
    check_attempts(runs_dir, "train_reflow", damaged, uninterrupted(ref.run_id), 100)
