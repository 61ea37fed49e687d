"""``pipeline``: train_base -> (generate_pairs -> train_reflow) x reflow.rounds -> evaluate."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow, get_run_logger

from flows.config import PipelineConfig, load_config
from flows.evaluate import evaluate
from flows.generate import generate_pairs
from flows.inputs import pipeline_inputs
from flows.notes import describe_pipeline
from flows.stage import StageRunner, StageSpec, result_sections
from flows.train import train_base, train_distill, train_reflow
from flows.train_states import check_pipeline
from rf_core.evaluate import EvalRow
from storage import tracking
from tasks.results import PairSetResult


@dataclass(frozen=True)
class PipelineResult:
    """What one pipeline run made.

    Attributes:
        experiment_id, run_id: the config's MLflow experiment and this run's parent run.
        models: 1-RF, 2-RF, ... then the distilled student if any, each registered.
        stores: the pair set of each reflow round.
        rows: the evaluation of every model (same noise and labels).
        figure: images: the models × NFE sample figure in the runs folder (also in MLflow).
        fd_name: what the rows' ``fd`` is (tasks.results.SweepResult).
    """

    experiment_id: str
    run_id: str
    models: tuple[tracking.ModelRef, ...]
    stores: tuple[PairSetResult, ...]
    rows: tuple[EvalRow, ...]
    figure: str | None = None
    fd_name: str = "fd"


def pipeline_stage(cfg: PipelineConfig) -> StageSpec:
    """The parent run: its key is the digest of every result-deciding section of the config."""
    tags = {tracking.TAG_CONFIG: cfg.name}
    return StageSpec("pipeline", (result_sections(cfg),), tags, _params(cfg))


def _params(cfg: PipelineConfig) -> dict:
    exclude = {"testing": True, "execution": {"storage_options"}}  # no credentials in MLflow
    return cfg.model_dump(mode="json", exclude=exclude)


@flow(name="pipeline")
def pipeline(config: PipelineConfig | str) -> PipelineResult:
    """The whole Rectified Flow pipeline for one config, as one MLflow parent run.

    With ``distill.enabled`` the last k-RF is also distilled into a 1-step model on the last
    reflow pair store, and evaluated beside the others.

    Stages are subflows, each with its own nested MLflow run. With ``config.resume`` finished
    stages of an identical earlier run are reused and an interrupted pair store is resumed, so
    running the same command again after a crash continues where it stopped.

    Args:
        config: a PipelineConfig or the path of its YAML file.
    """
    cfg = load_config(config)
    pipeline_inputs(cfg)  # before any run: the data fits the model, the metric can be computed
    check_pipeline(cfg)  # the devices of every training stage, before any work
    stages, logger = StageRunner(cfg), get_run_logger()
    with stages.run(pipeline_stage(cfg)) as run:
        current = train_base(cfg, parent_run_id=run.run_id)
        models, stores = [current], []
        for r in range(cfg.reflow.rounds):
            logger.info("reflow round %d of %d", r + 1, cfg.reflow.rounds)
            pairs = generate_pairs(cfg, model=current.uri, parent_run_id=run.run_id)
            stores.append(pairs)
            init = current.uri if cfg.reflow.init_from_previous else None
            current = train_reflow(cfg, store=pairs.uri, init_model=init, parent_run_id=run.run_id)
            models.append(current)
        if cfg.distill.enabled:  # "+distill": a 1-step student of the last k-RF
            student = train_distill(
                cfg, store=stores[-1].uri, init_model=current.uri, parent_run_id=run.run_id
            )
            models.append(student)
        result = evaluate(cfg, models=[m.uri for m in models], parent_run_id=run.run_id)
        describe_pipeline(run.run_id, cfg.name, models)
    return PipelineResult(
        stages.experiment_id,
        run.run_id,
        tuple(models),
        tuple(stores),
        result.rows,
        result.figure,
        result.fd_name,
    )
