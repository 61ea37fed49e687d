"""Fill a pair store: per chunk, draw noise and labels from (seed, chunk), solve the ODE, write.

Chunk i's noise and labels come from a CPU generator seeded by (seed, i) only, so a chunk that is
resumed, regenerated or written by another process on the same kind of device is bit-identical to
the one an uninterrupted run writes. On an accelerator the next chunk is solved while a background
thread writes the last one (a queue of one: at most two chunks in memory); on a CPU the writes stay
in the solving thread, where they cost less than a thread competing with torch's.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rf_core.compiled import BatchCompiled, compile_velocity
from rf_core.solvers import solve_ode
from storage.layout import ChunkCorruptError, PairStoreError
from storage.pairstore import PairStore


@dataclass(frozen=True)
class GenStats:
    """What one :func:`generate_chunks` call did.

    Attributes:
        chunks_done: chunks this call generated and marked done.
        chunks_skipped: requested chunks already done (by an earlier run or another process).
        nfe: model evaluations spent, summed over the generated chunks.
        seconds: wall time of the call.
    """

    chunks_done: int
    chunks_skipped: int
    nfe: int
    seconds: float


def chunk_seed(seed: int, i: int) -> int:
    """A 63-bit seed from (seed, i) only; a hash avoids the collisions of seed * K + i."""
    digest = hashlib.sha256(f"rf-pairs/{seed}/{i}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def chunk_inputs(store: PairStore, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise and labels of chunk ``i``, drawn on the CPU so every device gets the same numbers.

    Returns:
        x0 (m, *sample_shape) float32 ~ N(0, I) and y (m,) int64 uniform in [0, num_classes),
        or all -1 for an unconditional store; m = chunk length.
    """
    start, stop = store.chunk_bounds(i)
    return draw_inputs(store.seed, i, stop - start, store.sample_shape, store.num_classes)


def draw_inputs(
    seed: int, i: int, m: int, sample_shape: Sequence[int], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The noise and labels of chunk ``i`` (``m`` samples) of a store made with ``seed``, without
    the store (:func:`chunk_inputs`; the solver screen draws chunk 0's before creating it)."""
    g = torch.Generator(device="cpu").manual_seed(chunk_seed(seed, i))
    x0 = torch.randn((m, *sample_shape), generator=g)
    if num_classes > 0:
        y = torch.randint(0, num_classes, (m,), generator=g)
    else:
        y = torch.full((m,), -1, dtype=torch.int64)
    return x0, y


def solve_chunk(
    model: nn.Module, store: PairStore, i: int, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Solve chunk ``i`` with the store's solver settings.

    Returns:
        x0, x1 (m, *sample_shape) float32, y (m,) int64, and the NFE spent on the chunk.

    Raises:
        ChunkCorruptError: the solution has NaN or Inf (nothing is written).
    """
    x0, y = chunk_inputs(store, i)
    res = solve_ode(model, x0.to(device), y.to(device), **store.solver.solve_kwargs())
    x1 = res.x1.detach().to("cpu", torch.float32).numpy()
    if not np.isfinite(x1).all():
        raise ChunkCorruptError(store.uri, i, "the ODE solution x1 has NaN or Inf; not marked done")
    return x0.numpy(), x1, y.numpy(), int(getattr(res, "nfe_total", res.nfe))


def prepare_model(model: nn.Module, store: PairStore, device: str | torch.device) -> nn.Module:
    """``model`` on ``device``, compiled at the solve batch size when the store's solver says so.

    Idempotent: a model already compiled for this store is returned as it is, so a caller that
    generates in several calls (a shard task's groups of chunks) compiles once.

    Raises:
        PairStoreError: ``model`` was compiled for another batch size than the store's.
    """
    solver = store.solver
    if isinstance(model, BatchCompiled):
        if model.batch_size != solver.batch_size or not solver.compile:
            raise PairStoreError(
                f"model is compiled for batch {model.batch_size} but pair store {store.uri} "
                f"solves batches of {solver.batch_size} with compile={solver.compile}; pass the "
                "plain model"
            )
        return model
    model = model.to(device)
    return compile_velocity(model, solver.batch_size) if solver.compile else model


class _Writer:
    """One background thread writing finished chunks; put() blocks while one write is pending."""

    def __init__(self, store: PairStore):
        self.store, self.error = store, None
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.thread = threading.Thread(target=self._run, name="pair-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:  # after a failure, drain without writing
                try:
                    self.store.write_chunk(*item)
                except BaseException as e:  # surfaced to the caller in put()/close()
                    self.error = e

    def put(self, item: tuple) -> None:
        self._raise()
        self.queue.put(item)

    def close(self) -> None:
        """Wait for pending writes; re-raise a write error."""
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


def generate_chunks(
    model: nn.Module,
    store: PairStore,
    chunk_ids: Iterable[int] | None = None,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    overlap: bool | None = None,
) -> GenStats:
    """Generate the given chunks of ``store`` that are not done yet.

    Args:
        model: velocity field ``v = model(x, t, y)``, the store's source model; moved to ``device``
            (and compiled there when the store's solver says ``compile``).
        store: a store opened with mode "r+".
        chunk_ids: chunks to generate; ``None`` = all. Done chunks are skipped.
        device: where to solve.
        batch_size: samples per solve; must equal the store's ``solver.batch_size`` (the batch
            partition changes adaptive step control, hence the pairs). ``None`` = the store's.
        overlap: write chunk i in a background thread while chunk i+1 is solved. ``None``: only
            when solving on an accelerator. On a CPU the writer's checksums and copies take a core
            from torch's threads, which then wait on each other: measured 1.10x the in-memory
            time with the writer vs 1.03x without (2 cores, BENCHMARKS.md "Pair store").

    Returns:
        GenStats of this call.

    Raises:
        PairStoreError: read-only store, bad chunk ids or batch size.
        ChunkCorruptError: a chunk's solution has NaN/Inf (earlier chunks stay written).
    """
    t_start = time.perf_counter()
    store.require_writable()
    if batch_size is not None and batch_size != store.solver.batch_size:
        raise PairStoreError(
            f"batch_size={batch_size} differs from the store's solver batch_size="
            f"{store.solver.batch_size}; pairs would not be reproducible. Use the store's value."
        )
    ids = list(range(store.n_chunks)) if chunk_ids is None else [int(i) for i in chunk_ids]
    for i in ids:
        store.chunk_bounds(i)  # validates before any work
    model = prepare_model(model, store, device)
    if overlap is None:
        overlap = torch.device(device).type != "cpu"
    writer = _Writer(store) if overlap else None
    done = skipped = nfe = 0
    try:
        for i in ids:
            # Check the marker right before solving: another process may have finished it.
            if store.is_done(i):
                skipped += 1
                continue
            x0, x1, y, chunk_nfe = solve_chunk(model, store, i, device)
            if writer is not None:
                writer.put((i, x0, x1, y, chunk_nfe))
            else:
                store.write_chunk(i, x0, x1, y, chunk_nfe)
            done, nfe = done + 1, nfe + chunk_nfe
    finally:
        if writer is not None:
            writer.close()
    return GenStats(done, skipped, nfe, time.perf_counter() - t_start)
