"""``evaluate``: NFE sweep of several models from shared noise; metrics attached to each model."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.common import (
    current_flow_run_id,
    link_run,
    resolve_model_arg,
    setup_tracking,
    train_device,
)
from flows.config import PipelineConfig, load_config
from rf_core.training import load_checkpoint
from storage import tracking
from tasks.data import TOYS
from tasks.evaluate import classifier_key, evaluate_models, train_or_load_classifier
from tasks.progress import artifact_key


def model_names(refs: list[tracking.ModelRef]) -> list[str]:
    """Display names "1rf", "2rf", "2rf-distill", ...; repeats get a suffix ("2rf-b")."""
    names: list[str] = []
    for r in refs:
        name, i = r.name, 0
        while name in names:
            i += 1
            name = f"{r.name}-{chr(ord('a') + i)}"
        names.append(name)
    return names


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a markdown table; columns that are empty in every row are left out."""
    cols = [c for c in rows[0] if any(r[c] is not None for r in rows)] if rows else []

    def fmt(v: Any) -> str:
        return "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def ensure_classifier(cfg: PipelineConfig, device: str) -> tracking.ClassifierRef:
    """The dataset's registered Fréchet classifier, trained and registered on first use.

    Looked up in MLflow by training-data digest and settings (any experiment), so every later
    evaluation of the dataset scores with the same classifier instead of retraining one.
    Must run inside the evaluation run: a new classifier becomes one of its outputs.
    """
    steps = cfg.evaluate.classifier_steps
    key, data_digest = classifier_key(cfg.data.dataset, cfg.data.root, steps)
    ref = tracking.find_classifier(cfg.data.dataset, key)
    if ref is None:
        from rf_core.classifier import load_classifier

        cache = str(cfg.runs / "eval" / "classifiers")
        path = train_or_load_classifier(
            cfg.data.dataset, cfg.data.root, cache, key, steps=steps, device=device
        )
        clf, _ = load_classifier(path)
        ref = tracking.log_classifier(clf, path, cfg.data.dataset, key, data_digest)
    return ref


@flow(name="evaluate")
def evaluate(
    config: PipelineConfig | str, models: list[str], parent_run_id: str | None = None
) -> dict[str, Any]:
    """Sample every model at Euler 1, 2, 4, 8 steps (and dopri5) from the same noise; score.

    Args:
        config: a PipelineConfig or the path of its YAML file (its ``evaluate`` section).
        models: checkpoint paths, m-<id> or models:/ URIs.
        parent_run_id: MLflow run of the enclosing pipeline, if any.

    Returns:
        {"rows": [one dict per (model, solver, steps)], "models": {name: model id}, "run_id"}.
    """
    cfg = load_config(config)
    if not models:
        raise ValueError("models: give at least one model to evaluate")
    refs = [resolve_model_arg(m, f"models[{i}]") for i, m in enumerate(models)]
    for i, r in enumerate(refs):
        try:
            load_checkpoint(r.checkpoint, expected_config=cfg.model)
        except ValueError as e:
            raise ValueError(f"models[{i}]: {e}") from None
    names = model_names(refs)
    experiment_id = setup_tracking(cfg)
    e = cfg.evaluate
    with tracking.stage_run(
        experiment_id, "evaluate", parent_run_id=parent_run_id,
        flow_run_id=current_flow_run_id(), params={"evaluate": e.model_dump(mode="json")},
        tags={"rectiflow.models": ",".join(r.uri for r in refs)},
    ) as run_id:  # fmt: skip
        link_run(experiment_id, run_id, "evaluate")
        for r in refs:
            if r.model_id:
                tracking.log_model_input(r.model_id)
        classifier = None
        if cfg.data.dataset not in TOYS:
            clf = ensure_classifier(cfg, train_device(cfg))
            tracking.tag_classifier(clf)  # which classifier version these numbers come from
            classifier = clf.checkpoint
        result = evaluate_models(
            {n: r.checkpoint for n, r in zip(names, refs, strict=True)},
            cfg.data.dataset,
            str(cfg.runs / "eval" / run_id),
            root=cfg.data.root, steps=e.steps, adaptive=e.adaptive, n_samples=e.n_samples,
            batch_size=e.batch_size, seed=e.seed, device=train_device(cfg), classifier=classifier,
        )  # fmt: skip
        for name, r in zip(names, refs, strict=True):
            if r.model_id:  # metrics on the model's page in MLflow
                tracking.log_model_metrics(result["metrics"][name], r.model_id)
            else:
                prefixed = {f"{name}/{k}": v for k, v in result["metrics"][name].items()}
                tracking.log_metrics([(0, prefixed)], run_id)
        for path in result["figures"]:
            tracking.log_artifact(path, "figures")
        table = markdown_table(result["rows"])
        tracking.log_text(table, "nfe_sweep.md")
        create_markdown_artifact(
            f"# NFE sweep\n\n{table}", key=artifact_key("nfe-sweep", cfg.experiment)
        )
    model_ids = {n: r.model_id or r.checkpoint for n, r in zip(names, refs, strict=True)}
    return {"rows": result["rows"], "models": model_ids, "run_id": run_id}
