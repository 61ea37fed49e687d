"""Evaluation metrics as logged on each model, gathered per model or per (pipeline) run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from storage.tracking.models import resolve_model
from storage.tracking.tags import TAG_STAGE


@dataclass(frozen=True)
class Evaluation:
    """Evaluation metrics of one model as one evaluation run logged them.

    Attributes:
        model_id: the evaluated LoggedModel.
        name: its LoggedModel name ("1rf", "2rf", "2rf-distill").
        run_id: the evaluation run the metrics come from.
        metrics: {"fd/euler_1": .., "nfe/dopri5": .., "straightness": ..}.
    """

    model_id: str
    name: str
    run_id: str
    metrics: dict[str, float]


def _evaluation(model_id: str, run_id: str | None = None) -> Evaluation | None:
    """Metrics of ``model_id`` logged by ``run_id`` (default: its latest evaluation run)."""
    lm = mlflow.get_logged_model(model_id)
    logged = sorted(lm.metrics or [], key=lambda m: (m.timestamp, m.step))
    if run_id is None and logged:
        run_id = logged[-1].run_id
    metrics = {m.key: m.value for m in logged if m.run_id == run_id}
    return Evaluation(model_id, lm.name, run_id, metrics) if metrics else None


def _evaluate_runs(run: Any) -> list[Any]:
    """The evaluate runs of a pipeline run (its children), or the run itself."""
    stage = run.data.tags.get(TAG_STAGE)
    if stage == "evaluate":
        return [run]
    if stage != "pipeline":
        return []
    children = mlflow.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}' "
        f"and tags.`{TAG_STAGE}` = 'evaluate'",
        order_by=["attributes.start_time ASC"],
        output_format="list",
    )
    return [mlflow.get_run(r.info.run_id) for r in children]  # search leaves model inputs out


def evaluations(ref: str, field: str = "RUN_OR_MODEL") -> list[Evaluation]:
    """Evaluation metrics of a model, or of every model evaluated in a run.

    Args:
        ref: a model ("m-<id>", "models:/..."; its latest evaluation), a pipeline run id (every
            model its evaluate stage scored), an evaluate run id, or a training run id (its model).
        field: argument name for error messages.

    Raises:
        ValueError: naming ``field`` when ``ref`` is unknown or has no evaluation metrics.
    """
    if ref.startswith(("m-", "models:/")):
        found = [_evaluation(resolve_model(ref, field).model_id)]
    else:
        try:
            run = mlflow.get_run(ref)
        except MlflowException:
            raise ValueError(
                f"{field}: {ref!r} is neither a model (m-<id>, models:/<name>/<version>) nor a "
                f"run id in MLflow at {mlflow.get_tracking_uri()}"
            ) from None
        evals = _evaluate_runs(run)
        if evals:
            found = [
                _evaluation(m.model_id, e.info.run_id) for e in evals for m in e.inputs.model_inputs
            ]
        else:  # a training run: its model's latest evaluation
            found = [_evaluation(m.model_id) for m in run.outputs.model_outputs]
    found = [e for e in found if e is not None]
    if not found:
        raise ValueError(
            f"{field}: {ref!r} has no evaluation metrics; run `rectiflow evaluate` on it first"
        )
    return found
