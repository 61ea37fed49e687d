"""Training flows: ``train_base`` (1-RF on data), ``train_reflow`` (k-RF on a pair store) and
``distill`` (a 1-step student of k-RF on its pairs).

Each flow checks its inputs, builds its :class:`~flows.stage.StageSpec` (the stage key comes from
the result-deciding settings only), reuses a finished identical run when resuming, and otherwise
runs its training task inside the stage run and registers the model. A training killed midway
continues from its newest training state when the same command runs again; the new MLflow run
is tagged with the run it continues (``rectiflow.resumed_from``, ``rectiflow.resumed_at_step``),
that run with ``rectiflow.resumed_by``, and the new run's loss curve holds every logged step
once (flows.train_states, docs/training.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from prefect import flow, get_run_logger

from flows.common import checkpoint_dir
from flows.config import PipelineConfig, load_config
from flows.inputs import TrainingInputs, base_inputs, data_input, distill_inputs, reflow_inputs
from flows.notes import describe_training
from flows.stage import StageRun, StageRunner, StageSpec
from flows.train_states import TrainingPlan, processes, training_plan
from rf_core.config import TrainConfig
from rf_core.datasets import DatasetIdentity
from rf_core.training import load_checkpoint
from storage import tracking
from tasks.results import TrainResult
from tasks.train import (
    PairsInput,
    TrainJob,
    distill_model,
    train_base_model,
    train_reflow_model,
)


def _params(cfg: PipelineConfig, train_cfg: TrainConfig) -> dict:
    """The settings as MLflow params, with the batch as it is split: the effective batch (the
    ``batch_size`` of a step) = processes x micro_batch x accumulation."""
    n = processes(cfg)
    split = {"effective_batch": train_cfg.batch_size, "processes": n}
    split["micro_batch"] = train_cfg.batch_size // (n * train_cfg.accumulation)
    train = train_cfg.model_dump(mode="json") | split
    return {"train": train, "model": cfg.model.model_dump(mode="json")}


def base_stage(cfg: PipelineConfig, data: DatasetIdentity | None = None) -> StageSpec:
    """1-RF: decided by the data, the architecture, the training settings and the seed; a set on
    disk also by its digest (``data``, from :func:`flows.inputs.base_inputs`): a changed file
    retrains."""
    if cfg.data.on_disk and data is None:
        raise ValueError("the key of training on a dataset on disk needs its identity")
    inputs = (cfg.data, cfg.model, cfg.base, cfg.seed, *([data.digest] if data else []))
    return StageSpec("train_base", inputs, {tracking.TAG_K: 1}, _params(cfg, cfg.base))


def reflow_stage(cfg: PipelineConfig, given: TrainingInputs) -> StageSpec:
    """(k+1)-RF: decided by the architecture, the settings, the pairs and the init model."""
    init_sha = given.init and given.init.checkpoint_sha256
    inputs = (cfg.model, cfg.reflow.train, given.pairs.digest, init_sha)
    tags = {tracking.TAG_K: given.pairs.k + 1}
    return StageSpec("train_reflow", inputs, tags, _params(cfg, cfg.reflow.train))


def distill_stage(cfg: PipelineConfig, given: TrainingInputs) -> StageSpec:
    """The student: decided by the architecture, the settings, the pairs and the teacher."""
    train_cfg, teacher = cfg.distill.train_config(), given.init
    inputs = (cfg.model, train_cfg, given.pairs.digest, teacher.checkpoint_sha256)
    return StageSpec("distill", inputs, {tracking.TAG_K: teacher.k}, _params(cfg, train_cfg))


def _job(cfg: PipelineConfig, run: StageRun, plan: TrainingPlan, k: int, name: str) -> TrainJob:
    out = checkpoint_dir(cfg) / f"{cfg.experiment}-{name}-{run.run_id}.pt"
    resume = str(plan.resume.path) if plan.resume is not None else None
    return TrainJob(
        cfg.model, plan.train, str(out), run.run_id, k, cfg.data.dataset, plan.devices,
        str(plan.states), resume, plan.fingerprint, cfg.testing.step_delay_s,
    )  # fmt: skip


def base_plan(cfg: PipelineConfig, data: DatasetIdentity | None = None) -> TrainingPlan:
    """How ``train_base`` would train (checked, with the state it would resume); ``data``: the
    identity of a set on disk (:func:`flows.inputs.base_inputs`)."""
    return training_plan(cfg, base_stage(cfg, data), "base", cfg.base)


def reflow_plan(cfg: PipelineConfig, given: TrainingInputs) -> TrainingPlan:
    return training_plan(cfg, reflow_stage(cfg, given), "reflow.train", cfg.reflow.train)


def distill_plan(cfg: PipelineConfig, given: TrainingInputs) -> TrainingPlan:
    train = cfg.distill.train_config()
    return training_plan(cfg, distill_stage(cfg, given), "distill", train)


def _start(plan: TrainingPlan, stage: str) -> TrainingPlan:
    """Report the plan's damaged states (a warning each) and what it resumes."""
    plan.start()
    for line in plan.warnings():
        get_run_logger().warning(line)
    if plan.resume is not None:
        get_run_logger().info(
            "%s: resuming from %s (step %d)", stage, plan.resume.path, plan.resume.step
        )
    return plan


def _attempt(spec: StageSpec, plan: TrainingPlan) -> StageSpec:
    """The stage run, tagged with the run and step it continues when it resumes a state."""
    if plan.resume is None:
        return spec
    prev = {tracking.TAG_RESUMED_FROM: plan.resume.manifest.get("run_id", "")}
    prev[tracking.TAG_RESUMED_STEP] = plan.resume.step
    return dataclasses.replace(spec, tags={**spec.tags, **prev})


def _link(plan: TrainingPlan, run: StageRun) -> None:
    """Tag the run that wrote the resumed state with the run that continues it."""
    prev = plan.resume.manifest.get("run_id") if plan.resume is not None else None
    if prev:
        tracking.tag_run(prev, {tracking.TAG_RESUMED_BY: run.run_id})


def _log_training_inputs(given: TrainingInputs) -> None:
    """The pair set (context "training") and the init model as inputs of the active run."""
    name = tracking.pair_set_name(given.pairs.uri)
    tracking.log_pair_set(given.pairs.uri, name, given.pairs.digest, tracking.CONTEXT_TRAINING)
    if given.init is not None and given.init.model_id:
        tracking.log_model_input(given.init.model_id)


WHAT = {
    "base": "flow matching on `{dataset}` with independent noise (1-RF).",
    "reflow": "reflow: flow matching on the (noise, sample) pairs of the model below.",
    "distill": "a 1-step student distilled from the teacher below on its pairs.",
}


def _register(
    cfg: PipelineConfig,
    stages: StageRunner,
    run: StageRun,
    result: TrainResult,
    k: int,
    given: TrainingInputs | None = None,
    distilled: bool = False,
) -> tracking.ModelRef:
    """Log the checkpoint as a LoggedModel registered as ``<experiment>-<k>rf[-distill]``; its
    training metrics go to the model and its pair set (listed as "Datasets used" on the model's
    page), and the model and run get a description naming their parents."""
    name = f"{k}rf" + ("-distill" if distilled else "")
    model, _ = load_checkpoint(result.checkpoint)
    ref = tracking.log_trained_model(
        model, result.checkpoint, result.sha256, f"{cfg.experiment}-{name}", k,
        cfg.tracking.model_format, distilled=distilled,
    )  # fmt: skip
    pairs = given and tracking.pair_set_key(given.pairs.uri, given.pairs.digest)
    values = {"final_loss": result.final_loss, "train_seconds": result.seconds}
    values["resumed_from_step"] = result.resumed_from
    tracking.log_metrics([(result.steps, values)], run.run_id, ref.model_id, pairs)
    what = WHAT["distill" if distilled else "reflow" if given else "base"]
    describe_training(ref, run.run_id, stages.parent_run_id, what.format(**vars(cfg.data)), given)
    get_run_logger().info("%s trained: %s (%s)", name, ref.model_id, ref.registered)
    return ref


def _train_stage(
    stages: StageRunner,
    spec: StageSpec,
    plan_of: Callable[[], TrainingPlan],
    train: Callable[[StageRun, TrainingPlan], tracking.ModelRef],
) -> tracking.ModelRef:
    """The finished identical run's model when resuming; otherwise the plan (``plan_of()``,
    started), then ``train(run, plan)`` (train and register) inside the stage run, which is
    tagged with the run it continues and linked to it, and the plan finished."""
    if ref := stages.reuse(spec):
        return ref
    plan = _start(plan_of(), spec.name)
    with stages.run(_attempt(spec, plan)) as run:
        _link(plan, run)
        ref = train(run, plan)
    plan.finished()
    return ref


@flow(name="train_base")
def train_base(config: PipelineConfig | str, parent_run_id: str | None = None) -> tracking.ModelRef:
    """Train 1-RF (flow matching with independent noise) on the config's dataset.

    With ``config.resume`` an identical earlier training (same data, model and settings) is
    reused instead of retrained.

    Args:
        config: a PipelineConfig or the path of its YAML file.
        parent_run_id: MLflow run of the enclosing pipeline, if any.

    Returns:
        The registered model (``<experiment>-1rf``).
    """
    cfg = load_config(config)
    stages, data = StageRunner(cfg, parent_run_id), base_inputs(cfg)

    def train(run: StageRun, plan: TrainingPlan) -> tracking.ModelRef:
        if data is not None:  # the set on disk: a "training" dataset input, with its classes
            tracking.log_training_data(data.path, data.digest, data.kind, data.n, data.classes)
        result = train_base_model(_job(cfg, run, plan, 1, "1rf"), data_input(cfg))
        return _register(cfg, stages, run, result, 1)

    return _train_stage(stages, base_stage(cfg, data), lambda: base_plan(cfg, data), train)


@flow(name="train_reflow")
def train_reflow(
    config: PipelineConfig | str,
    store: str,
    init_model: str | None = None,
    parent_run_id: str | None = None,
) -> tracking.ModelRef:
    """Train (k+1)-RF on the pairs of ``store`` (generated by k-RF).

    Args:
        config: a PipelineConfig or the path of its YAML file.
        store: URI of a complete pair store.
        init_model: model to initialise from (checkpoint path, m-<id> or models:/ URI); by
            default the store's source model when ``reflow.init_from_previous``.
        parent_run_id: MLflow run of the enclosing pipeline, if any.
    """
    cfg = load_config(config)
    stages = StageRunner(cfg, parent_run_id)
    given = reflow_inputs(cfg, store, init_model)
    k = given.pairs.k + 1

    def train(run: StageRun, plan: TrainingPlan) -> tracking.ModelRef:
        _log_training_inputs(given)
        pairs = PairsInput(given.pairs.uri, given.init.checkpoint if given.init else None)
        result = train_reflow_model(_job(cfg, run, plan, k, f"{k}rf"), pairs)
        return _register(cfg, stages, run, result, k, given)

    return _train_stage(stages, reflow_stage(cfg, given), lambda: reflow_plan(cfg, given), train)


@flow(name="distill")
def train_distill(
    config: PipelineConfig | str,
    store: str,
    init_model: str,
    parent_run_id: str | None = None,
) -> tracking.ModelRef:
    """Distill k-RF into a 1-step model on the pairs of ``store`` ("+distill").

    Args:
        config: a PipelineConfig or the path of its YAML file (its ``distill`` section; the
            stage runs whether or not ``distill.enabled`` is set: the pipeline checks that).
        store: URI of a complete pair store (the pipeline passes its last reflow store).
        init_model: the k-RF teacher and initialisation (checkpoint path, m-<id>, models:/ URI).
        parent_run_id: MLflow run of the enclosing pipeline, if any.

    Returns:
        The registered student, ``<experiment>-<k>rf-distill``.
    """
    cfg = load_config(config)
    stages = StageRunner(cfg, parent_run_id)
    given = distill_inputs(cfg, store, init_model)
    k = given.init.k

    def train(run: StageRun, plan: TrainingPlan) -> tracking.ModelRef:
        _log_training_inputs(given)
        job = _job(cfg, run, plan, k, f"{k}rf-distill")
        result = distill_model(job, PairsInput(given.pairs.uri, given.init.checkpoint))
        return _register(cfg, stages, run, result, k, given, distilled=True)

    return _train_stage(stages, distill_stage(cfg, given), lambda: distill_plan(cfg, given), train)
