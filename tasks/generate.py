"""Generation tasks: one shard of chunks per device, and the coordinator's store verbs."""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from rf_core.training import load_checkpoint
from storage.generate import generate_chunks
from storage.pairstore import PairStore


class InjectedFailure(RuntimeError):
    """Raised by ``testing.fail_shards`` fault injection (never in normal runs)."""


def split_shards(chunk_ids: list[int], n_shards: int) -> list[list[int]]:
    """Deal chunks round-robin into ``n_shards`` lists (empty shards dropped)."""
    shards = [chunk_ids[i::n_shards] for i in range(max(n_shards, 1))]
    return [s for s in shards if s]


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
) -> dict[str, Any]:
    """Generate the not-yet-done chunks of one shard; safe to retry (done chunks are skipped).

    Args:
        store_uri: pair store (already created by the coordinator).
        checkpoint: source model checkpoint (the store's source).
        chunk_ids: chunks of this shard.
        device: "cpu" or "cuda:i".
        shard_id: index of the shard (for logs and fault injection).
        group: chunks per generate_chunks call.
        fail_attempts: testing only: raise InjectedFailure on attempts 1..fail_attempts, after the
            first group of chunks is written.
        delay_s: testing only: sleep after each group.

    Returns:
        {"shard", "device", "generated", "skipped", "nfe", "seconds", "attempt"}.
    """
    attempt = task_run.run_count or 1
    model, _ = load_checkpoint(checkpoint, map_location=device)
    store = PairStore.open(store_uri, mode="r+")
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
    return {"shard": shard_id, "device": device, "attempt": attempt, **stats}


@task(cache_policy=NO_CACHE)
def finalize_store(store_uri: str) -> str:
    """Check every chunk and write complete + digest (coordinator only). Returns the digest."""
    store = PairStore.open(store_uri, mode="r+")
    return store.attrs["digest"] if store.is_finalized else store.finalize()
