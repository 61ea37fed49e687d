"""The descriptions the stage flows write on their MLflow runs and models: what each one is and
its parents (source model, pair set, init model, pipeline run) as links between UI pages."""

from __future__ import annotations

from flows.inputs import TrainingInputs
from storage import tracking


def _parent_lines(parent_run_id: str | None) -> list[str]:
    return [f"- pipeline run: {tracking.run_link(parent_run_id)}"] if parent_run_id else []


def _pair_set_lines(given: TrainingInputs) -> list[str]:
    """The pair set (linked to the run that generated it) and the model it came from."""
    pairs = given.pairs
    name = tracking.pair_set_name(pairs.uri)
    gen_run = tracking.pair_set_run(pairs.digest)
    shown = tracking.run_link(gen_run, f"`{name}`") if gen_run else f"`{name}`"
    lines = [f"- pair set: {shown} at `{pairs.uri}` (digest `{pairs.digest[:12]}`)"]
    source = pairs.source.get("model_id")
    src = tracking.model_link(source) if source else f"checkpoint `{pairs.source['model_uri']}`"
    return [*lines, f"- source model (generated the pairs): {src}"]


def _init_line(given: TrainingInputs, role: str) -> list[str]:
    init = given.init
    if init is None:
        return [f"- {role}: none (random initialisation)"]
    shown = tracking.model_link(init.model_id) if init.model_id else f"`{init.checkpoint}`"
    return [f"- {role}: {shown}"]


def describe_training(
    ref: tracking.ModelRef,
    run_id: str,
    parent_run_id: str | None,
    what: str,
    given: TrainingInputs | None = None,
) -> None:
    """Describe a trained model and its training run with the same text: what it is
    (``what``), then its parents as links."""
    head = f"**{ref.name}** (`{ref.registered}`): {what}"
    lines = [f"- model: {tracking.model_link(ref.model_id)}"]
    lines.append(f"- training run: {tracking.run_link(run_id)}")
    if given is not None:
        role = "teacher and init model" if ref.distilled else "init model"
        lines += _pair_set_lines(given) + _init_line(given, role)
    lines += _parent_lines(parent_run_id)
    sample = f"Sample it: `rectiflow sample models:/{ref.registered} --n 64 --out grid.png`"
    text = "\n".join([head, "", *lines, "", sample])
    tracking.describe_model(ref.model_id, text)
    tracking.describe_run(run_id, text)


def describe_generation(
    run_id: str, uri: str, n: int, model: tracking.ModelRef, solver: str, parent: str | None
) -> None:
    """Describe a generation run: the pair set it wrote and the model it solved."""
    src = tracking.model_link(model.model_id) if model.model_id else f"`{model.checkpoint}`"
    lines = [f"- source model: {src}", f"- solver: `{solver}`", *_parent_lines(parent)]
    head = f"**Pair set** `{tracking.pair_set_name(uri)}`: {n} pairs at `{uri}`"
    tracking.describe_run(run_id, "\n".join([head, "", *lines]))


def describe_evaluation(run_id: str, models: list[tracking.ModelRef], parent: str | None) -> None:
    """Describe an evaluation run: the models it scored on the same noise and labels."""
    shown = [tracking.model_link(m.model_id) if m.model_id else f"`{m.checkpoint}`" for m in models]
    head = "**Evaluation**: NFE sweep of every model on the same noise and labels"
    lines = [f"- model: {s}" for s in shown] + _parent_lines(parent)
    tracking.describe_run(run_id, "\n".join([head, "", *lines]))


def describe_pipeline(run_id: str, config: str, models: list[tracking.ModelRef]) -> None:
    """Describe a pipeline run: its config and the models it made (stages are its children)."""
    head = f"**Pipeline** of config `{config}`; its stages are the nested runs."
    lines = [f"- {m.name}: {tracking.model_link(m.model_id)}" for m in models if m.model_id]
    tracking.describe_run(run_id, "\n".join([head, "", *lines]))
