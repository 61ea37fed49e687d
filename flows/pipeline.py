"""``pipeline``: train_base -> (generate_pairs -> train_reflow) x reflow.rounds -> evaluate."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.common import (
    apply_storage_options,
    current_flow_run_id,
    link_run,
    setup_tracking,
    stage_key,
)
from flows.config import PipelineConfig, load_config
from flows.evaluate import evaluate
from flows.generate import generate_pairs
from flows.train import train_base, train_distill, train_reflow
from storage import tracking


@flow(name="pipeline")
def pipeline(config: PipelineConfig | str) -> dict[str, Any]:
    """The whole Rectified Flow pipeline for one config, as one MLflow parent run.

    With ``distill.enabled`` the last k-RF is also distilled into a 1-step model on the last
    reflow pair store, and evaluated beside the others.

    Stages are subflows, each with its own nested MLflow run. With ``config.resume`` finished
    stages of an identical earlier run are reused and an interrupted pair store is resumed, so
    running the same command again after a crash continues where it stopped.

    Args:
        config: a PipelineConfig or the path of its YAML file.

    Returns:
        {"experiment_id", "run_id", "models": [{"k", "name", "distilled", "model_id",
        "registered", "uri"}], "stores",
        "rows"}.
    """
    cfg = load_config(config)
    apply_storage_options(cfg)  # store URLs such as s3:// need them
    experiment_id = setup_tracking(cfg)
    logger = get_run_logger()
    # Where and how work runs (executors, credentials, fault injection) does not change results.
    how = {"task_runner", "dask_address", "dask_workers", "dask_shards_per_worker"}
    how |= {"dask_timeout_s", "storage_options"}
    exclude = {"testing": True, "pairs": how}
    key = stage_key("pipeline", cfg.model_dump(mode="json", exclude=exclude))
    tracking.mark_unfinished(experiment_id, "pipeline", key)
    with tracking.stage_run(
        experiment_id, "pipeline", flow_run_id=current_flow_run_id(),
        tags={tracking.TAG_KEY: key, "rectiflow.config": cfg.name},
        params=cfg.model_dump(mode="json", exclude={"testing"}),
    ) as run_id:  # fmt: skip
        link_run(experiment_id, run_id, "pipeline")
        current = train_base(cfg, parent_run_id=run_id)
        models, stores = [current], []
        for r in range(cfg.reflow.rounds):
            logger.info("reflow round %d of %d", r + 1, cfg.reflow.rounds)
            pairs = generate_pairs(cfg, model=current.uri, parent_run_id=run_id)
            stores.append(pairs)
            init = current.uri if cfg.reflow.init_from_previous else None
            current = train_reflow(cfg, store=pairs["uri"], init_model=init, parent_run_id=run_id)
            models.append(current)
        if cfg.distill.enabled:  # "+distill": a 1-step student of the last k-RF
            models.append(
                train_distill(
                    cfg, store=stores[-1]["uri"], init_model=current.uri, parent_run_id=run_id
                )
            )
        result = evaluate(cfg, models=[m.uri for m in models], parent_run_id=run_id)
    return {
        "experiment_id": experiment_id,
        "run_id": run_id,
        "models": [
            {
                "k": m.k,
                "name": m.name,
                "distilled": m.distilled,
                "model_id": m.model_id,
                "registered": m.registered,
                "uri": m.uri,
            }
            for m in models
        ],
        "stores": stores,
        "rows": result["rows"],
    }
