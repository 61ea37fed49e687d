"""``evaluate``: NFE sweep of several models from shared noise; metrics attached to each model."""

from __future__ import annotations

from prefect import flow

from flows.common import train_device
from flows.config import PipelineConfig, load_config
from flows.data_config import eval_metric
from flows.inputs import data_input, evaluate_inputs
from flows.notes import describe_evaluation
from flows.stage import StageRunner, StageSpec
from rf_core.evaluate import rows_to_markdown
from storage import tracking
from tasks.evaluate import (
    SAMPLES_FIGURE,
    EvalJob,
    InceptionSpec,
    classifier_key,
    evaluate_models,
    one_step_metric,
    train_or_load_classifier,
)
from tasks.results import EvalResult


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


def evaluate_stage(cfg: PipelineConfig, refs: list[tracking.ModelRef]) -> StageSpec:
    """An evaluation is decided by its settings, the data and the models (never reused: the key
    only closes runs a killed process left open)."""
    inputs = (cfg.evaluate, cfg.data, [r.checkpoint_sha256 for r in refs])
    tags = {tracking.TAG_MODELS: ",".join(r.uri for r in refs)}
    params = {
        "evaluate": cfg.evaluate.model_dump(mode="json"),
        "metric": eval_metric(cfg.data, cfg.evaluate),
    }
    return StageSpec("evaluate", inputs, tags, params)


def ensure_classifier(cfg: PipelineConfig, device: str) -> tracking.ClassifierRef:
    """The dataset's registered Fréchet classifier, trained and registered on first use.

    Looked up in MLflow by training-data digest and settings (any experiment), so every later
    evaluation of the dataset scores with the same classifier instead of retraining one.
    Must run inside the evaluation run: a new classifier becomes one of its outputs.
    """
    recipe = cfg.evaluate.classifier
    key, data_digest = classifier_key(cfg.data.dataset, cfg.data.root, recipe)
    ref = tracking.find_classifier(cfg.data.dataset, key)
    if ref is None:
        from rf_core.classifier import load_classifier

        cache = str(cfg.runs / "eval" / "classifiers")
        path = train_or_load_classifier(
            cfg.data.dataset, cfg.data.root, cache, key, recipe=recipe, device=device
        )
        clf, _ = load_classifier(path)
        ref = tracking.log_classifier(clf, path, cfg.data.dataset, key, data_digest)
    return ref


@flow(name="evaluate")
def evaluate(
    config: PipelineConfig | str, models: list[str], parent_run_id: str | None = None
) -> EvalResult:
    """Sample every model at Euler 1, 2, 4, 8 steps (and dopri5) from the same noise; score.

    Once per ``evaluate.guidance`` scale. Metrics go to each model; the version of a registered
    name with the best unguided 1-step score gets the registry alias ``champion``.

    Args:
        config: a PipelineConfig or the path of its YAML file (its ``evaluate`` section).
        models: checkpoint paths, m-<id> or models:/ URIs.
        parent_run_id: MLflow run of the enclosing pipeline, if any.

    Returns:
        The sweep's rows, {name: model id (or checkpoint)} and the evaluation's MLflow run.
    """
    cfg = load_config(config)
    stages = StageRunner(cfg, parent_run_id)
    refs = evaluate_inputs(cfg, models)  # Inception weights included: none, nothing sampled
    names, e, device = model_names(refs), cfg.evaluate, train_device(cfg)
    metric = eval_metric(cfg.data, e)
    with stages.run(evaluate_stage(cfg, refs)) as run:
        for r in refs:
            if r.model_id:
                tracking.log_model_input(r.model_id)
        classifier, inception = None, None
        if metric == "classifier":
            clf = ensure_classifier(cfg, device)
            tracking.tag_classifier(clf)  # which classifier version these numbers come from
            classifier = clf.checkpoint
        elif metric in ("inception", "none"):
            inception = InceptionSpec(
                metric, data_input(cfg), cfg.model.data_shape, e.n_samples, e.inception_weights
            )
        sweep = evaluate_models(EvalJob(
            {n: r.checkpoint for n, r in zip(names, refs, strict=True)},
            cfg.data.dataset,
            str(cfg.runs / "eval" / run.run_id),
            root=cfg.data.root, steps=e.steps, adaptive=e.adaptive, n_samples=e.n_samples,
            batch_size=e.batch_size, seed=e.seed, device=device, classifier=classifier,
            inception=inception, guidance=e.guidance,
        ))  # fmt: skip
        for name, r in zip(names, refs, strict=True):
            if r.model_id:  # metrics on the model's page in MLflow
                tracking.log_model_metrics(sweep.metrics[name], r.model_id)
                tracking.crown_champion(r.model_id, one_step_metric(cfg.data.dataset))
            else:
                run.metrics({f"{name}/{k}": v for k, v in sweep.metrics[name].items()})
        describe_evaluation(run.run_id, refs, stages.parent_run_id)
        for path in sweep.figures:
            tracking.log_artifact(path, "figures")
        run.markdown("nfe-sweep", "NFE sweep", rows_to_markdown(sweep.rows))
    model_ids = {n: r.model_id or r.checkpoint for n, r in zip(names, refs, strict=True)}
    figure = next((f for f in sweep.figures if f.endswith(SAMPLES_FIGURE)), None)
    return EvalResult(sweep.rows, model_ids, run.run_id, figure, sweep.fd_name)
