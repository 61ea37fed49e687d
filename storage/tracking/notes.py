"""Descriptions of runs and models (the "Description" of their MLflow pages) and links between
them: markdown with links relative to the UI (``#/experiments/<id>/runs/<id>``), so they work
on whatever host serves the UI."""

from __future__ import annotations

import mlflow

NOTE = "mlflow.note.content"  # the tag MLflow's UI shows as a run's or a model's description


def run_link(run_id: str, text: str | None = None) -> str:
    """A markdown link to a run's page."""
    exp = mlflow.get_run(run_id).info.experiment_id
    return f"[{text or run_id}](#/experiments/{exp}/runs/{run_id})"


def model_link(model_id: str, text: str | None = None) -> str:
    """A markdown link to a LoggedModel's page, named "<name> (<id>)" by default."""
    lm = mlflow.get_logged_model(model_id)
    label = text or f"{lm.name} ({model_id})"
    return f"[{label}](#/experiments/{lm.experiment_id}/models/{model_id})"


def describe_run(run_id: str, text: str) -> None:
    """Set a run's description (markdown)."""
    mlflow.MlflowClient().set_tag(run_id, NOTE, text)


def describe_model(model_id: str, text: str) -> None:
    """Set a LoggedModel's description (markdown)."""
    mlflow.set_logged_model_tags(model_id, {NOTE: text})
