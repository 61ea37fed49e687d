"""A healthy `rectiflow run` prints no ERROR and no Traceback line, as a new user runs it.

A real child process with its own temporary Prefect server (no PREFECT_API_URL) and none of the
test session's Prefect settings, so the CLI's own defaults are what is tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import tiny_config_dict

REPO = Path(__file__).resolve().parents[2]
TINY_STEPS = {
    "base.steps": 20,
    "pairs.n": 256,
    "reflow.train.steps": 20,
    "evaluate.n_samples": 64,
}


@pytest.mark.slow
def test_a_healthy_run_prints_no_error_line(tmp_path, runs_dir):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(runs_dir, **TINY_STEPS)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(config)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "tiny-2rf" in output, output  # the whole pipeline ran, reflow included
    bad = [line for line in output.splitlines() if "ERROR" in line or "Traceback" in line]
    assert not bad, output


@pytest.mark.parametrize(("given", "enabled"), [(None, "False"), ("true", "True")])
def test_prefect_telemetry_is_off_unless_the_user_turns_it_on(given, enabled):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    env |= {"PYTHONPATH": str(REPO)} | (
        {} if given is None else {"PREFECT_SERVER_ANALYTICS_ENABLED": given}
    )
    code = (
        "import flows.cli\n"
        "from prefect.settings import get_current_settings\n"
        "print(get_current_settings().server.analytics_enabled)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == enabled
