"""``generate_pairs``: fill a pair store from a model, in shard tasks on threads or Dask, resumable.

The flow is the store's coordinator: it creates (or resumes) the store and writes its attributes,
splits the chunks that are not done yet into shards (one per local device with the thread runner,
``pairs.dask_shards_per_worker`` per worker with Dask), waits while reporting progress from the done
markers, then finalizes the store (digest) and logs the pair set to MLflow. Shard tasks only write
chunks. Re-running the flow with the same store -- from the CLI, a deployment re-run or
``prefect flow-run retry`` -- generates only the missing chunks.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import torch
from prefect import flow, get_run_logger
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner
from torch import nn

from flows.common import devices
from flows.config import PipelineConfig, load_config
from flows.errors import InputError, bad_input
from flows.inputs import GenerateInputs, generate_inputs, store_args
from flows.notes import describe_generation
from flows.stage import StageRun, StageRunner, StageSpec
from rf_core.solver_screen import ToleranceUnreachable
from rf_core.training import load_checkpoint
from storage import tracking
from storage.layout import format_ranges
from storage.pairstore import PairStore
from storage.solver_choice import open_or_create_pairs, recorded_screen
from tasks.generate import finalize_store, generate_shard, split_shards
from tasks.progress import Progress, artifact_key
from tasks.results import PairSetResult, ShardOutcome

if TYPE_CHECKING:
    from flows.dask_runner import DaskPlan

_log = logging.getLogger(__name__)
# One worker thread per local device; fixed at import because a flow's task runner is.
MAX_WORKERS = max(1, torch.cuda.device_count())


def open_store(
    cfg: PipelineConfig, given: GenerateInputs, log: Callable[[str], None] = _log.info
) -> PairStore:
    """Create the store or resume it (``given`` is checked: same model, solver, seed, shape).

    A new store for ``pairs.solver.method: auto`` is screened first, here, on the first device
    (storage.solver_choice); a resumed one keeps the choice it records and is never screened.

    Raises:
        InputError: naming ``store`` when another process made it differently meanwhile, or
            ``pairs.solver`` when no solver reaches its tolerance (nothing is written).
    """
    device = devices(cfg)[0]

    def load_model() -> nn.Module:
        return load_checkpoint(given.model.checkpoint, map_location=device)[0]

    args = store_args(cfg, given.model)
    with bad_input("store"):
        try:
            return open_or_create_pairs(given.uri, load_model, device, log, **args)
        except ToleranceUnreachable as e:
            raise InputError(f"pairs.solver: {e}") from e


def report_choice(run: StageRun, store: PairStore) -> None:
    """The store's solver choice, when a screen made it: a Prefect table artifact, the same
    table in the MLflow run (``solver_choice.json``) and the screen's cost as metrics."""
    screen = recorded_screen(store)
    if screen is None:
        return
    rows, chosen = screen.table(), screen.chosen.label()
    run.table("solver", rows, f"{store.uri}: {chosen} chosen for {screen.request.label()}")
    tracking.log_table(rows, "solver_choice.json")
    run.metrics({"screen_evaluations": screen.evaluations, "screen_seconds": screen.seconds})


def generate_stage(cfg: PipelineConfig, given: GenerateInputs) -> StageSpec:
    """A generation run is decided by its store: the store's attributes fix the pairs."""
    m, uri = given.model, given.uri
    seed = cfg.pairs.round_seed(m.k)
    tags = {tracking.TAG_STORE: uri, tracking.TAG_SOURCE: m.uri, tracking.TAG_PAIR_SEED: seed}
    params = {"pairs": cfg.pairs.model_dump(mode="json"), "store": uri, "model": m.uri}
    params["pair_seed"] = seed  # this round's: pairs.seed for 1-RF's pairs, derived after
    params |= {"execution": cfg.execution.model_dump(mode="json", exclude={"storage_options"})}
    return StageSpec("generate_pairs", (uri,), tags, params)


def run_shards(
    cfg: PipelineConfig, store: PairStore, checkpoint: str, plan: DaskPlan | None = None
) -> list[ShardOutcome]:
    """Generate the missing chunks: one shard per local device on this flow's threads, or, given a
    Dask ``plan``, ``execution.dask_shards_per_worker`` shards per worker in a Dask sub-flow."""
    if plan is None:
        devs = devices(cfg)
        shards = split_shards(store.missing_chunks(), len(devs))
        return fan_out(cfg, store.uri, checkpoint, shards, devs)
    from flows.dask_runner import api_for_workers  # distributed takes ~1 s to import

    n_shards = plan.n_workers * cfg.execution.dask_shards_per_worker
    shards = split_shards(store.missing_chunks(), n_shards)
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
) -> list[ShardOutcome]:
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
) -> list[ShardOutcome]:
    """Submit one shard task per shard (device i mod len(devs)) to the current flow's task runner
    and report progress from the done markers; returns how each shard ended (failed ones too)."""
    store, ex = PairStore.open(uri), cfg.execution
    task = generate_shard.with_options(
        retries=ex.retries, retry_delay_seconds=list(ex.retry_delay_s)
    )
    with requesting(resources):
        futures = [
            task.submit(
                uri,
                checkpoint,
                chunks,
                devs[i % len(devs)],
                i,
                group=ex.progress_every,
                fail_attempts=cfg.testing.fail_shards.get(i, 0),
                delay_s=cfg.testing.chunk_delay_s,
            )
            for i, chunks in enumerate(shards)
        ]
    progress = Progress(artifact_key("generate", cfg.experiment), store.n_chunks, "chunks done")
    while wait(futures, timeout=1.0).not_done:
        progress.update(int(store.done_mask().sum()))
    progress.update(int(store.done_mask().sum()))
    outcomes = []
    for i, (chunks, fut) in enumerate(zip(shards, futures, strict=True)):
        shard = ShardOutcome(i, devs[i % len(devs)], format_ranges(chunks))
        # The result, not fut.state: task states reach the API asynchronously (events).
        try:
            outcomes.append(dataclasses.replace(shard, result=fut.result()))
        except Exception as e:  # the shard's last attempt failed
            outcomes.append(dataclasses.replace(shard, error=f"{type(e).__name__}: {e}"))
    return outcomes


def _report_shards(run: StageRun, uri: str, shards: list[ShardOutcome]) -> None:
    """Table artifact of the shards; raises naming every shard that failed after its retries.

    Raises:
        RuntimeError: naming each failed shard and its chunks (done chunks are kept).
    """
    run.table("shards", [s.table_row() for s in shards], description=uri)
    failed = [f"shard {s.shard} (chunks {s.chunks}): {s.error}" for s in shards if s.error]
    if failed:
        raise RuntimeError(
            f"pair generation into {uri} failed in {len(failed)} shard(s): "
            + "; ".join(failed)
            + ". Done chunks are kept: run the same command again to resume."
        )


@flow(name="generate_pairs", task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS))
def generate_pairs(
    config: PipelineConfig | str,
    model: str,
    store: str | None = None,
    parent_run_id: str | None = None,
) -> PairSetResult:
    """Generate ``pairs.n`` (x0, x1 = ODE(x0)) pairs from ``model`` into a pair store.

    Args:
        config: a PipelineConfig or the path of its YAML file.
        model: source model: checkpoint path, m-<id>, models:/m-<id> or models:/<name>/<version>.
        store: store URI (local path or fsspec URL); default
            ``<runs>/stores/<experiment>-<k>rf-<model id>.zarr``. The same URI resumes.
        parent_run_id: MLflow run of the enclosing pipeline, if any.

    Returns:
        The complete store: URI, digest, size, source model, chunks generated, shards.
    """
    cfg = load_config(config)
    plan = None
    if cfg.execution.task_runner == "dask":  # before any write: an unreachable scheduler fails
        from flows.dask_runner import plan_dask  # distributed takes ~1 s to import

        plan = plan_dask(cfg)
    stages = StageRunner(cfg, parent_run_id)
    given = generate_inputs(cfg, model, store)
    logger = get_run_logger()
    pairs, ref = open_store(cfg, given, logger.info), given.model
    missing = pairs.missing_chunks()
    logger.info(
        "store %s: %d of %d chunks to generate with %s", pairs.uri, len(missing), pairs.n_chunks,
        pairs.solver.label(),
    )  # fmt: skip
    with stages.run(generate_stage(cfg, given)) as run:
        if ref.model_id:
            tracking.log_model_input(ref.model_id)
        report_choice(run, pairs)
        shards = run_shards(cfg, pairs, ref.checkpoint, plan) if missing else []
        if shards:
            _report_shards(run, pairs.uri, shards)
        digest = finalize_store(given.uri)
        name = tracking.pair_set_name(given.uri)
        tracking.log_pair_set(given.uri, name, digest, tracking.CONTEXT_GENERATED)
        solver = cfg.pairs.solver.label()
        describe_generation(run.run_id, given.uri, pairs.n, ref, solver, stages.parent_run_id)
        done = PairStore.open(given.uri)
        generated = sum(s.result.generated for s in shards)
        run.metrics({
            "chunks_generated": generated, "chunks_resumed": pairs.n_chunks - len(missing),
            "nfe_total": float(done.nfe().sum()), "nfe_per_chunk": float(done.nfe().mean()),
        })  # fmt: skip
    logger.info("pair set %s complete, digest %s", given.uri, digest)
    return PairSetResult(
        given.uri, digest, done.n, ref.model_id, ref.k, generated, run.run_id, tuple(shards),
        done.solver.label(),
    )  # fmt: skip
