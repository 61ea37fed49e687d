"""``generate_pairs``: fill a pair store from a model, in shard tasks on threads or Dask, resumable.

The flow is the store's coordinator: it creates (or resumes) the store and writes its attributes,
splits the chunks that are not done yet into shards (one per local device with the thread runner,
``pairs.dask_shards_per_worker`` per worker with Dask), waits while reporting progress from the done
markers, then finalizes the store (digest) and logs the pair set to MLflow. Shard tasks only write
chunks. Re-running the flow with the same store -- from the CLI, a deployment re-run or
``prefect flow-run retry`` -- generates only the missing chunks.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import (
    apply_storage_options,
    current_flow_run_id,
    devices,
    link_run,
    resolve_model_arg,
    setup_tracking,
    stage_key,
    store_uri,
)
from flows.config import PipelineConfig, load_config
from storage import tracking
from storage.layout import format_ranges
from storage.pairstore import PairStore, PairStoreError
from tasks.generate import finalize_store, generate_shard, split_shards
from tasks.progress import Progress, artifact_key

if TYPE_CHECKING:
    from flows.dask_runner import DaskPlan

# One worker thread per local device; fixed at import because a flow's task runner is.
MAX_WORKERS = max(1, torch.cuda.device_count())


def open_store(cfg: PipelineConfig, uri: str, model: tracking.ModelRef) -> PairStore:
    """Create the store or resume it; refuse one made from another model or differently.

    Raises:
        ValueError: naming ``store`` and both sides of any mismatch; nothing is changed.
    """
    try:
        existing = PairStore.open(uri, mode="r")
    except PairStoreError:
        existing = None  # nothing (usable) there yet: create below, which refuses non-stores
    if existing is not None:
        have = existing.source
        if have["checkpoint_sha256"] != model.checkpoint_sha256:
            raise ValueError(
                f"store: {uri} was generated from model {have['model_id'] or have['model_uri']} "
                f"(checkpoint {have['checkpoint_sha256'][:12]}), not from model "
                f"{model.model_id or model.checkpoint} ({model.checkpoint_sha256[:12]}). "
                "Pass a new --store URI; nothing was changed."
            )
    p = cfg.pairs
    try:
        return PairStore.open_or_create(
            uri, n=p.n, chunk=p.chunk, sample_shape=cfg.model.data_shape, seed=p.seed,
            source=model.source(), solver=p.solver, dataset=cfg.data.dataset,
            num_classes=cfg.model.num_classes,
        )  # fmt: skip
    except PairStoreError as e:
        raise ValueError(f"store: {e}") from None


def _normalize_uri(uri: str) -> str:
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


def run_shards(
    cfg: PipelineConfig, store: PairStore, checkpoint: str, plan: DaskPlan | None = None
) -> list[dict[str, Any]]:
    """Generate the missing chunks: one shard per local device on this flow's threads, or, given a
    Dask ``plan``, ``pairs.dask_shards_per_worker`` shards per worker in a Dask sub-flow."""
    if plan is None:
        devs = devices(cfg)
        shards = split_shards(store.missing_chunks(), len(devs))
        return fan_out(cfg, store.uri, checkpoint, shards, devs)
    from flows.dask_runner import api_for_workers  # distributed takes ~1 s to import

    shards = split_shards(store.missing_chunks(), plan.n_workers * cfg.pairs.dask_shards_per_worker)
    # Prefect fixes a flow's task runner when the flow is decorated, but the runner is a setting
    # of the config the run loads: so the fan-out runs as a sub-flow given its runner per call
    # (with_options). The coordinator's work (store, MLflow) stays in this flow and process.
    shard_flow = generate_shards.with_options(task_runner=plan.runner)
    with api_for_workers(plan.local):
        return shard_flow(cfg, store.uri, checkpoint, shards, plan.device, plan.resources)


def requesting(resources: dict[str, float] | None) -> AbstractContextManager[Any]:
    """Dask tasks submitted inside ask for ``resources`` (GPU shards: {"GPU": 1}). Nothing for CPU
    shards: a CPU worker advertises no GPU, and a task asking for one would wait forever."""
    if not resources:
        return nullcontext()
    import dask  # only Dask runs get here

    return dask.annotate(resources=resources)


@flow(name="generate_shards")
def generate_shards(
    cfg: PipelineConfig,
    store: str,
    checkpoint: str,
    shards: list[list[int]],
    device: str,
    resources: dict[str, float],
) -> list[dict[str, Any]]:
    """The Dask fan-out of ``generate_pairs`` (run by it as a sub-flow with a DaskTaskRunner).

    A worker lost mid-shard has its shard rescheduled by Dask to another worker; the task skips
    the chunks already marked done, so only the lost chunks are generated again.
    """
    return fan_out(cfg, store, checkpoint, shards, [device], resources)


def fan_out(
    cfg: PipelineConfig,
    uri: str,
    checkpoint: str,
    shards: list[list[int]],
    devs: list[str],
    resources: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Submit one shard task per shard (device i mod len(devs)) to the current flow's task runner;
    report progress from the done markers; table artifact of the shards.

    Raises:
        RuntimeError: naming every shard that failed after its retries (done chunks are kept).
    """
    store = PairStore.open(uri)
    task = generate_shard.with_options(
        retries=cfg.pairs.retries, retry_delay_seconds=list(cfg.pairs.retry_delay_s)
    )
    with requesting(resources):
        futures = [
            task.submit(
                uri,
                checkpoint,
                chunks,
                devs[i % len(devs)],
                i,
                group=cfg.pairs.progress_every,
                fail_attempts=cfg.testing.fail_shards.get(i, 0),
                delay_s=cfg.testing.chunk_delay_s,
            )
            for i, chunks in enumerate(shards)
        ]
    progress = Progress(artifact_key("generate", cfg.experiment), store.n_chunks, "chunks done")
    while wait(futures, timeout=1.0).not_done:
        progress.update(int(store.done_mask().sum()))
    progress.update(int(store.done_mask().sum()))
    rows, failed = [], []
    for i, (chunks, fut) in enumerate(zip(shards, futures, strict=True)):
        row = {"shard": i, "device": devs[i % len(devs)], "chunks": format_ranges(chunks)}
        # The result, not fut.state: task states reach the API asynchronously (events).
        try:
            row |= {"state": "Completed"} | fut.result()
        except Exception as e:  # the shard's last attempt failed
            row |= {"state": "Failed", "error": f"{type(e).__name__}: {e}"}
            failed.append(f"shard {i} (chunks {format_ranges(chunks)}): {row['error']}")
        rows.append(row)
    create_table_artifact(rows, key=artifact_key("shards", cfg.experiment), description=store.uri)
    if failed:
        raise RuntimeError(
            f"pair generation into {store.uri} failed in {len(failed)} shard(s): "
            + "; ".join(failed)
            + ". Done chunks are kept: run the same command again to resume."
        )
    return rows


@flow(name="generate_pairs", task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS))
def generate_pairs(
    config: PipelineConfig | str,
    model: str,
    store: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Generate ``pairs.n`` (x0, x1 = ODE(x0)) pairs from ``model`` into a pair store.

    Args:
        config: a PipelineConfig or the path of its YAML file.
        model: source model: checkpoint path, m-<id>, models:/m-<id> or models:/<name>/<version>.
        store: store URI (local path or fsspec URL); default
            ``<runs>/stores/<experiment>-<k>rf-<model id>.zarr``. The same URI resumes.
        parent_run_id: MLflow run of the enclosing pipeline, if any.

    Returns:
        {"uri", "digest", "n", "model_id", "k", "generated", "run_id", "shards": [shard rows]}.
    """
    cfg = load_config(config)
    apply_storage_options(cfg)  # store URLs such as s3:// need them
    plan = None
    if cfg.pairs.task_runner == "dask":  # before any write: an unreachable scheduler fails here
        from flows.dask_runner import plan_dask  # distributed takes ~1 s to import

        plan = plan_dask(cfg)
    experiment_id = setup_tracking(cfg)
    ref = resolve_model_arg(model, "model")
    uri = _normalize_uri(store or store_uri(cfg, ref))
    pairs = open_store(cfg, uri, ref)
    logger = get_run_logger()
    missing = pairs.missing_chunks()
    logger.info("store %s: %d of %d chunks to generate", uri, len(missing), pairs.n_chunks)
    key = stage_key("generate_pairs", uri)
    tracking.mark_unfinished(experiment_id, "generate_pairs", key)
    tags = {tracking.TAG_KEY: key, tracking.TAG_STORE: uri, tracking.TAG_SOURCE: ref.uri}
    with tracking.stage_run(
        experiment_id, "generate_pairs", parent_run_id=parent_run_id,
        flow_run_id=current_flow_run_id(), tags=tags,
        params={"pairs": cfg.pairs.model_dump(mode="json"), "store": uri, "model": ref.uri},
    ) as run_id:  # fmt: skip
        link_run(experiment_id, run_id, "generate_pairs")
        if ref.model_id:
            tracking.log_model_input(ref.model_id)
        rows = run_shards(cfg, pairs, ref.checkpoint, plan) if missing else []
        digest = finalize_store(uri)
        tracking.log_pair_set(uri, Path(uri.rstrip("/")).name, digest, "generated")
        done = PairStore.open(uri)
        stats = {
            "chunks_generated": sum(r.get("generated", 0) for r in rows),
            "chunks_resumed": pairs.n_chunks - len(missing),
            "nfe_total": float(done.nfe().sum()),
            "nfe_per_chunk": float(done.nfe().mean()),
        }
        tracking.log_metrics([(0, stats)], run_id)
    logger.info("pair set %s complete, digest %s", uri, digest)
    return {
        "uri": uri, "digest": digest, "n": done.n, "model_id": ref.model_id, "k": ref.k,
        "generated": stats["chunks_generated"], "run_id": run_id, "shards": rows,
    }  # fmt: skip
