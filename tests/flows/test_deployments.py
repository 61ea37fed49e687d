"""prefect.yaml for real: a Prefect server, a process work pool, deploy --all, a worker run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helpers import tiny_config_dict
from tests.procs import free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
PREFECT = [sys.executable, "-m", "prefect"]
POOL = "rectiflow-process"


def _cli(args: list[str], env: dict, timeout: float = 180) -> str:
    out = subprocess.run(
        [*PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, (
        f"prefect {' '.join(args)}:\n{out.stdout[-2000:]}{out.stderr[-2000:]}"
    )
    return out.stdout


def _wait_healthy(api: str, server: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "prefect server exited"
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("prefect server did not become healthy")


@pytest.fixture
def server(tmp_path) -> tuple[str, dict]:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME; stopped after."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PWD": str(REPO),  # what the pull step templates as the working directory
    }
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_healthy(api, proc)
        yield api, {**env, "PREFECT_API_URL": api}
    finally:
        stop_process(proc)


@pytest.mark.slow
def test_prefect_yaml_deploys_and_a_worker_runs_the_toy_pipeline(server, tmp_path, runs_dir):
    api, env = server
    _cli(["work-pool", "create", POOL, "--type", "process"], env)
    _cli(["deploy", "--all", "--no-prompt"], env)

    deployments = httpx.post(f"{api}/deployments/filter", json={}).json()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}).json()}
    by_name = {f"{flows[d['flow_id']]}/{d['name']}": d for d in deployments}
    assert set(by_name) == {
        "pipeline/toy2d", "pipeline/mnist5k", "train_base/toy2d", "generate_pairs/toy2d",
        "train_reflow/toy2d", "distill/toy2d", "evaluate/toy2d",
    }  # fmt: skip
    for name in ("pipeline/toy2d", "pipeline/mnist5k"):
        (schedule,) = by_name[name]["schedules"]
        assert schedule["active"] is False and schedule["schedule"]["cron"]
    assert all(d["work_pool_name"] == POOL for d in deployments)
    pull = by_name["pipeline/toy2d"]["pull_steps"][0]
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)

    # Trigger the toy deployment on a tiny config and let one worker pass execute it.
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(runs_dir)))
    out = _cli(["deployment", "run", "pipeline/toy2d", "--param", f"config={config}"], env)
    run_id = next(w for w in out.split() if len(w) == 36 and w.count("-") == 4)
    deadline = time.monotonic() + 400
    state = None
    while time.monotonic() < deadline:
        _cli(["worker", "start", "--pool", POOL, "--run-once"], env, timeout=400)
        state = httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]["type"]
        if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
    assert state == "COMPLETED"
    assert (runs_dir / "mlflow.db").stat().st_size > 0
    assert list((runs_dir / "stores").glob("*.zarr"))  # the flow wrote where the config said
