"""``generate_pairs``: fill a pair store from a model, one shard task per device, resumable.

The flow is the store's coordinator: it creates (or resumes) the store and writes its attributes,
splits the chunks that are not done yet into one shard per device, waits while reporting progress
from the done markers, then finalizes the store (digest) and logs the pair set to MLflow. Workers
only write chunks. Re-running the flow with the same store -- from the CLI, a deployment re-run or
``prefect flow-run retry`` -- generates only the missing chunks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import (
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
    solver = {**p.solver.model_dump(), "batch_size": p.batch_size}
    try:
        return PairStore.open_or_create(
            uri, n=p.n, chunk=p.chunk, sample_shape=cfg.model.data_shape, seed=p.seed,
            source=model.source(), solver=solver, dataset=cfg.data.dataset,
            num_classes=cfg.model.num_classes,
        )  # fmt: skip
    except PairStoreError as e:
        raise ValueError(f"store: {e}") from None


def _normalize_uri(uri: str) -> str:
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


def run_shards(cfg: PipelineConfig, store: PairStore, checkpoint: str) -> list[dict[str, Any]]:
    """Fan the missing chunks out to one shard task per device; report progress; table artifact.

    Raises:
        RuntimeError: naming every shard that failed after its retries (done chunks are kept).
    """
    devs = devices(cfg)
    shards = split_shards(store.missing_chunks(), len(devs))
    task = generate_shard.with_options(
        retries=cfg.pairs.retries, retry_delay_seconds=list(cfg.pairs.retry_delay_s)
    )
    futures = [
        task.submit(
            store.uri,
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
        rows = run_shards(cfg, pairs, ref.checkpoint) if missing else []
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
