"""Registry names for versions: ``latest`` (every new version) and ``champion`` (the best
1-step score).

``latest`` is MLflow's own: ``models:/<name>/latest`` always means the highest version, and
MLflow reserves "latest" as an alias name, so it is never set as an alias; rectiflow's commands
also read it written as ``models:/<name>@latest``. ``models:/<name>@champion`` is an alias: the
version of ``<name>`` whose model has the lowest 1-step score among those evaluated (its latest
evaluation), so ``mlflow.pyfunc.load_model("models:/mnist5k-2rf@champion")`` is the best
one-step sampler of that name. It moves when an evaluation finds a better version.
"""

from __future__ import annotations

import mlflow
from mlflow.exceptions import MlflowException

from storage.tracking.tags import TAG_REGISTERED

LATEST, CHAMPION = "latest", "champion"


def latest_version(name: str):
    """The highest version of registered model ``name`` (what ``models:/<name>/latest`` is).

    Raises:
        ValueError: ``name`` has no versions.
    """
    versions = mlflow.MlflowClient().search_model_versions(f"name = '{name}'")
    if not versions:
        raise ValueError(f"registered model {name!r} has no versions")
    return max(versions, key=lambda mv: int(mv.version))


def set_alias(name: str, alias: str, version: str | int) -> None:
    """Point ``models:/<name>@<alias>`` at ``version``."""
    mlflow.MlflowClient().set_registered_model_alias(name, alias, str(version))


def _latest_metric(model_id: str, metric: str) -> float | None:
    try:
        logged = mlflow.get_logged_model(model_id).metrics or []
    except MlflowException:  # the version's model was deleted since
        return None
    values = sorted((m.timestamp, m.step, m.value) for m in logged if m.key == metric)
    return values[-1][2] if values else None


def crown_champion(model_id: str, metric: str) -> str | None:
    """Give the alias ``champion`` of ``model_id``'s registered name to the version with the
    lowest ``metric`` (ties: the newest); returns "<name>/<version>", or None when the model was
    not registered by rectiflow or no version has the metric."""
    name = mlflow.get_logged_model(model_id).tags.get(TAG_REGISTERED)
    if not name:
        return None
    scores = []
    for mv in mlflow.MlflowClient().search_model_versions(f"name = '{name}'"):
        value = _latest_metric(mv.model_id or mv.source.removeprefix("models:/"), metric)
        if value is not None:
            scores.append((value, -int(mv.version)))
    if not scores:
        return None
    best = -min(scores)[1]
    set_alias(name, CHAMPION, best)
    return f"{name}/{best}"
