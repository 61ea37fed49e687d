"""Generation tasks: one shard of chunks on a device or Dask worker, and the coordinator's verbs."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run
from torch import nn

from rf_core.training import checkpoint_sha256, load_checkpoint
from storage.generate import generate_chunks, prepare_model
from storage.pairstore import PairStore
from tasks.results import ShardResult


class InjectedFailure(RuntimeError):
    """Raised by ``testing.fail_shards`` fault injection (never in normal runs)."""


def split_shards(chunk_ids: list[int], n_shards: int) -> list[list[int]]:
    """Deal chunks round-robin into ``n_shards`` lists (empty shards dropped)."""
    shards = [chunk_ids[i::n_shards] for i in range(max(n_shards, 1))]
    return [s for s in shards if s]


def load_source_model(store: PairStore, checkpoint: str, device: str) -> nn.Module:
    """The store's source model from ``checkpoint`` as this host sees it (Dask workers may run
    elsewhere: the path must name the same file on every worker, e.g. on a shared filesystem).

    Raises:
        FileNotFoundError / ValueError: naming the path, the host, and what to do, when the file is
            missing here or is not the checkpoint the store was generated from.
    """
    host = socket.gethostname()
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(
            f"checkpoint {checkpoint} does not exist on host {host}: every worker must read the "
            "source checkpoint at this path (put it on a shared filesystem or copy it there)"
        )
    want = store.source["checkpoint_sha256"]
    if checkpoint_sha256(checkpoint) != want:
        raise ValueError(
            f"checkpoint {checkpoint} on host {host} is not the store's source model "
            f"(sha256 {want[:12]}): copy the same file to this path on every worker"
        )
    model, _ = load_checkpoint(checkpoint, map_location=device)
    return model


@task(
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
    task_run_name="shard-{shard_id}-{device}",
)
def generate_shard(
    store_uri: str,
    checkpoint: str,
    chunk_ids: list[int],
    device: str,
    shard_id: int,
    group: int = 4,
    fail_attempts: int = 0,
    delay_s: float = 0.0,
) -> ShardResult:
    """Generate the not-yet-done chunks of one shard; safe to retry (done chunks are skipped).

    Args:
        store_uri: pair store (already created by the coordinator).
        checkpoint: source model checkpoint (the store's source).
        chunk_ids: chunks of this shard.
        device: "cpu", "cuda:i", or "cuda" (a Dask worker's only visible GPU).
        shard_id: index of the shard (for logs and fault injection).
        group: chunks per generate_chunks call.
        fail_attempts: testing only: raise InjectedFailure on attempts 1..fail_attempts, after the
            first group of chunks is written.
        delay_s: testing only: sleep after each group.

    Returns:
        What this attempt did (chunks generated and skipped, NFE, time, where it ran).
    """
    attempt = task_run.run_count or 1
    store = PairStore.open(store_uri, mode="r+")
    # Compiled once here (when the store's solver says compile), not once per group of chunks.
    model = prepare_model(load_source_model(store, checkpoint, device), store, device)
    stats = {"generated": 0, "skipped": 0, "nfe": 0, "seconds": 0.0}
    for j in range(0, len(chunk_ids), group):
        s = generate_chunks(model, store, chunk_ids[j : j + group], device=device)
        for name, value in (("generated", s.chunks_done), ("skipped", s.chunks_skipped)):
            stats[name] += value
        stats["nfe"] += s.nfe
        stats["seconds"] += s.seconds
        if attempt <= fail_attempts:
            raise InjectedFailure(
                f"shard {shard_id}: injected failure (testing.fail_shards) on attempt {attempt}"
            )
        time.sleep(delay_s)
    where = {"host": socket.gethostname(), "pid": os.getpid()}
    return ShardResult(shard_id, device, **where, attempt=attempt, **stats)


@task(cache_policy=NO_CACHE)
def finalize_store(store_uri: str) -> str:
    """Check every chunk and write complete + digest (coordinator only). Returns the digest."""
    store = PairStore.open(store_uri, mode="r+")
    return store.attrs["digest"] if store.is_finalized else store.finalize()
