"""generate_pairs with ``pairs.solver.method: auto`` on the real Prefect engine and MLflow.

The flow screens once, when it creates the store; its log says so ("screening pair solvers"), and
the logs of a later run (reading the flow runs' logs back from the Prefect API) never do.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import mlflow
import pytest
from prefect import get_client

from flows.config import load_config
from flows.generate import generate_pairs
from storage import tracking
from storage.pairstore import PairStore
from storage.solver_choice import recorded_screen
from tests.helpers import tiny_config_dict

AUTO = {"method": "auto", "tolerance": 1e-2, "probe": 32}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint of the tiny config's MLP (untrained weights suffice for a screen)."""
    import torch

    from rf_core.config import ModelConfig
    from rf_core.models import build_model
    from rf_core.training import save_checkpoint

    torch.manual_seed(0)
    cfg = ModelConfig(kind="mlp", data_shape=(2,), hidden=32, depth=2)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", build_model(cfg))


def _cfg(runs: Path, **overrides):
    return load_config(tiny_config_dict(runs, **{"pairs.solver": AUTO, **overrides}))


def _gen_runs() -> list:
    exp = mlflow.get_experiment_by_name("tiny")
    runs = mlflow.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{tracking.TAG_STAGE}` = 'generate_pairs'",
        output_format="list",
    )
    return sorted(runs, key=lambda r: r.info.start_time)


async def _read(flow_run_id: str):
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()  # logs travel to the API in the background: all of them first
    async with get_client() as client:
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        flt = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        return logs, await client.read_artifacts(artifact_filter=flt)


def _screens_and_artifacts(run) -> tuple[int, dict]:
    logs, artifacts = asyncio.run(_read(run.data.tags[tracking.TAG_FLOW_RUN]))
    screens = sum("screening pair solvers" in log.message for log in logs)
    return screens, {a.key: a for a in artifacts}


def test_auto_screens_once_reports_the_choice_and_resumes_without_a_screen(
    prefect_api, runs_dir, checkpoint
):
    uri = str(runs_dir / "auto.zarr")
    # The first run stops after one group of chunks (a shard that always fails, no retries).
    faulty = _cfg(runs_dir, **{"testing.fail_shards": {0: 5}, "execution.retries": 0})
    with pytest.raises(RuntimeError, match="shard 0"):
        generate_pairs(faulty, model=str(checkpoint), store=uri)
    partial = PairStore.open(uri)
    assert 0 < len(partial.missing_chunks()) < partial.n_chunks and not partial.solver.is_auto
    record = partial.attrs["solver_choice"]
    res = generate_pairs(_cfg(runs_dir), model=str(checkpoint), store=uri)
    store = PairStore.open(uri)
    assert store.is_finalized and store.attrs["solver_choice"] == record  # never re-screened
    assert res.solver == store.solver.label() == recorded_screen(store).chosen.label()
    first, second = _gen_runs()
    assert (first.info.status, second.info.status) == ("FAILED", "FINISHED")
    (n1, arts1), (n2, arts2) = _screens_and_artifacts(first), _screens_and_artifacts(second)
    assert (n1, n2) == (1, 0)
    # Both runs report the recorded choice: a Prefect table and an MLflow table artifact.
    rows = recorded_screen(store).table()
    for arts, run in ((arts1, first), (arts2, second)):
        table = arts["solver-tiny"]
        assert table.type == "table" and json.loads(table.data) == json.loads(json.dumps(rows))
        path = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="solver_choice.json"
        )
        logged = json.loads(Path(path).read_text())
        assert logged["columns"] == list(rows[0]) and len(logged["data"]) == len(rows)
        assert run.data.metrics["screen_evaluations"] == recorded_screen(store).evaluations
    # The same pairs as a run that pins the chosen recipe: the same digest.
    chosen = store.solver.model_dump(exclude_defaults=True, exclude={"batch_size"})
    pinned = _cfg(runs_dir, **{"pairs.solver": {"method": store.solver.method, **chosen}})
    again = generate_pairs(pinned, model=str(checkpoint), store=str(runs_dir / "pinned.zarr"))
    assert again.digest == res.digest


def test_an_unreachable_tolerance_fails_before_any_write(prefect_api, runs_dir, checkpoint):
    uri = runs_dir / "tight.zarr"
    tight = _cfg(runs_dir, **{"pairs.solver": {**AUTO, "tolerance": 1e-12}})
    with pytest.raises(ValueError, match=r"^pairs\.solver: solver\['tolerance'\] = 1e-12 is"):
        generate_pairs(tight, model=str(checkpoint), store=str(uri))
    assert not uri.exists() and _gen_runs() == []  # no store, no MLflow run
