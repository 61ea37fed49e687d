"""Session fixtures: one real Prefect test server, one migrated MLflow SQLite DB, tiny configs.

Environment set here, before any test module imports prefect or mlflow:
- PREFECT_HOME in a temp dir (never the user's ~/.prefect), analytics off (offline noise);
- MLFLOW_DISABLE_TELEMETRY (offline); MLFLOW_TRACKING_URI unset so runs go to the test's folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.procs import free_port, stop_process  # noqa: F401  (used by test modules)

_HOME = Path(tempfile.mkdtemp(prefix="rectiflow-tests-"))
os.environ["PREFECT_HOME"] = str(_HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("PREFECT_API_URL", None)
# 2 shared cores: intra-op threads only oversubscribe them (subprocesses inherit this).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect API server for the whole session (flows run against it); yields its URL.

    Heartbeats are off: each flow run would otherwise wait ~1 s for the heartbeat thread.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def mlflow_template() -> Path:
    """An MLflow SQLite DB migrated once (~7 s); tests get copies."""
    import mlflow

    path = _HOME / "template" / "mlflow.db"
    path.parent.mkdir(parents=True)
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def make_runs_dir(parent: Path, template: Path) -> Path:
    """A fresh runs folder under ``parent`` holding a copy of the migrated MLflow DB."""
    runs = parent / "runs"
    runs.mkdir()
    shutil.copyfile(template, runs / "mlflow.db")
    return runs


@pytest.fixture
def runs_dir(tmp_path: Path, mlflow_template: Path) -> Path:
    return make_runs_dir(tmp_path, mlflow_template)


def tiny_config_dict(runs: Path, **overrides) -> dict:
    """A toy pipeline that runs in seconds: 8 Gaussians, small MLP, 8 chunks of 128 pairs."""
    cfg = {
        "name": "tiny",
        "runs_dir": str(runs),
        "devices": ["cpu"],
        "data": {"dataset": "8gaussians", "n_train": 2000},
        "model": {"kind": "mlp", "data_shape": [2], "hidden": 32, "depth": 2},
        "base": {"steps": 150, "batch_size": 128, "log_every": 25},
        "pairs": {
            "n": 1024,
            "chunk": 128,
            "solver": {"method": "dopri5", "rtol": 1e-4, "atol": 1e-4},
            "retry_delay_s": [0.1],
            "progress_every": 2,
        },
        "reflow": {"rounds": 1, "train": {"steps": 100, "batch_size": 128, "log_every": 25}},
        "evaluate": {"n_samples": 256, "steps": [1, 2], "adaptive": False},
        "tracking": {"model_format": "pickle"},
    }
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


@pytest.fixture
def tiny_yaml(tmp_path: Path, runs_dir: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(runs_dir)))
    return path
