"""Stage runs: a parent run per pipeline run, a nested run per stage, reuse by stage key."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric

from storage.tracking.tags import TAG_FLOW_RUN, TAG_KEY, TAG_STAGE


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


@contextmanager
def stage_run(
    experiment_id: str,
    stage: str,
    *,
    parent_run_id: str | None = None,
    flow_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Iterator[str]:
    """Start a (nested) MLflow run for one stage; yields its run id; FAILED on exceptions.

    Args:
        experiment_id: experiment of the pipeline config.
        stage: "pipeline", "train_base", "generate_pairs", "train_reflow" or "evaluate".
        parent_run_id: the pipeline's run, if this stage runs inside one.
        flow_run_id: the Prefect flow-run id (tagged, so each run links back to Prefect).
        tags: extra tags; params: nested dict logged flattened as params.
    """
    active = mlflow.active_run()
    all_tags = {TAG_STAGE: stage, TAG_FLOW_RUN: flow_run_id or "", **(tags or {})}
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=stage,
        nested=active is not None,
        parent_run_id=None if active is not None else parent_run_id,
        tags={k: str(v) for k, v in all_tags.items()},
    ) as run:
        flat = [(k, str(v)[:6000]) for k, v in _flatten(params or {}).items()]
        for i in range(0, len(flat), 100):  # log_params takes at most 100 per call
            mlflow.log_params(dict(flat[i : i + 100]))
        yield run.info.run_id


def log_metrics(
    rows: list[tuple[int, Mapping[str, float]]],
    run_id: str,
    model_id: str | None = None,
    dataset: tuple[str, str] | None = None,
) -> None:
    """Log many (step, {name: value}) rows in one call (a call costs ~20 ms on SQLite).

    Args:
        rows: (step, {metric: value}) rows.
        run_id: the run they belong to.
        model_id: attach them to this LoggedModel too (they show on its page).
        dataset: (name, digest) of the dataset they were measured on, as logged as an input of
            the run: a model's page lists the datasets of its metrics as "Datasets used".
    """
    now = int(time.time() * 1000)
    name, digest = dataset or (None, None)
    metrics = [
        Metric(k, float(v), now, int(step), model_id, name, digest)
        for step, values in rows
        for k, v in values.items()
    ]
    for i in range(0, len(metrics), 1000):  # the store's batch limit
        mlflow.MlflowClient().log_batch(run_id, metrics=metrics[i : i + 1000])


def _stage_runs(experiment_id: str, stage: str, key: str, status: str, **kw: Any) -> list[Any]:
    return mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_STAGE}` = '{stage}' and tags.`{TAG_KEY}` = '{key}' "
        f"and attributes.status = '{status}'",
        output_format="list",
        **kw,
    )


def find_finished_stage(experiment_id: str, stage: str, key: str) -> str | None:
    """Run id of the latest FINISHED run of ``stage`` with stage key ``key`` (for reuse)."""
    runs = _stage_runs(
        experiment_id,
        stage,
        key,
        "FINISHED",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def mark_unfinished(experiment_id: str, stage: str, key: str, status: str = "KILLED") -> int:
    """Close RUNNING runs of ``stage``/``key`` left by a killed process; returns how many."""
    runs = _stage_runs(experiment_id, stage, key, "RUNNING")
    for r in runs:
        mlflow.MlflowClient().set_terminated(r.info.run_id, status=status)
    return len(runs)


def tag_run(run_id: str, tags: Mapping[str, Any]) -> None:
    """Set tags on a run, finished or not (e.g. link a killed attempt to its continuation)."""
    client = mlflow.MlflowClient()
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))


def log_figure(figure: Any, path: str) -> None:
    mlflow.log_figure(figure, path)


def log_text(text: str, path: str) -> None:
    mlflow.log_text(text, path)


def log_table(rows: Sequence[Mapping[str, Any]], path: str) -> None:
    """Rows of one shape as a table artifact of the active run (``path`` ends in .json; the
    MLflow UI shows it as a table)."""
    columns = list(rows[0]) if rows else []
    mlflow.log_table({c: [r[c] for r in rows] for c in columns}, artifact_file=path)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a local file into the active run's artifacts."""
    mlflow.log_artifact(str(path), artifact_path)
