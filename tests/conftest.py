"""Session fixtures: one real Prefect test server, one migrated MLflow SQLite DB, tiny configs,
one stand-in for the Inception FID weights.

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

from tests.helpers import make_runs_dir, tiny_config_dict, write_random_inception_weights

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


@pytest.fixture(scope="session")
def inception_weights() -> Path:
    """torch-fidelity's Inception-v3 with RANDOM weights in the real weights' file format, written
    once (~5 s of network set-up); FIDs computed with it mean nothing as image quality."""
    from rf_core.frechet import INCEPTION_WEIGHTS

    return write_random_inception_weights(_HOME / "inception" / INCEPTION_WEIGHTS)


@pytest.fixture
def runs_dir(tmp_path: Path, mlflow_template: Path) -> Path:
    return make_runs_dir(tmp_path, mlflow_template)


@pytest.fixture
def tiny_yaml(tmp_path: Path, runs_dir: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(runs_dir)))
    return path
