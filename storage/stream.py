"""Stream (x0, x1, y) batches from a pair store into training, one whole chunk read at a time.

Each epoch the chunk order is shuffled with a generator seeded by (seed, epoch) -- the same order in
every rank and DataLoader worker, so they can split it without talking: rank r takes every
world_size-th chunk, then worker w of that rank every num_workers-th of those. Samples are shuffled
inside a buffer of ``buffer_chunks`` chunks, so memory is bounded by the buffer (two buffers with
prefetching: the next is read while the current one is consumed), never by n.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from storage.chunkio import read_arrays
from storage.layout import PairStoreError, format_ranges
from storage.pairstore import PairStore

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class PairStream(IterableDataset):
    """Iterable of ready (x0, x1, y) batches; use with ``DataLoader(stream, batch_size=None)``.

    Call :meth:`set_epoch` before each epoch when DataLoader workers are not persistent (each
    epoch they get a fresh copy of this object); otherwise the epoch advances on every iteration.

    Args:
        uri: pair store path or fsspec URL.
        batch_size: samples per yielded batch.
        shuffle: shuffle chunk order per epoch and samples inside the buffer.
        seed: shuffle seed; defaults to the store's seed.
        buffer_chunks: chunks held (and shuffled together) at once per worker.
        rank: this process's rank in distributed training.
        world_size: number of ranks; rank r streams every world_size-th chunk.
        only_done: stream the chunks generated so far from an unfinished store.
        drop_last: drop each worker's final short batch.
        prefetch: read the next buffer on a background thread while the current one is consumed
            (holds two buffers in memory instead of one; batches are identical either way). Off
            by default: on a 2-core CPU the reader competes with the training step's threads
            (BENCHMARKS.md, pair store); worth trying where the step runs on a GPU.

    Yields:
        x0 (B, *sample_shape) float32, x1 (B, *sample_shape) float32, y (B,) int64.
    """

    def __init__(
        self,
        uri: str,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        buffer_chunks: int = 4,
        rank: int = 0,
        world_size: int = 1,
        only_done: bool = False,
        drop_last: bool = False,
        prefetch: bool = False,
    ):
        super().__init__()
        for name, value in (("batch_size", batch_size), ("buffer_chunks", buffer_chunks)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (isinstance(world_size, int) and world_size > 0 and 0 <= rank < world_size):
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        self.uri, self.batch_size, self.shuffle = uri, batch_size, shuffle
        self.buffer_chunks, self.rank, self.world_size = buffer_chunks, rank, world_size
        self.only_done, self.drop_last, self.prefetch = only_done, drop_last, prefetch
        store = PairStore.open(uri, mode="r")
        if not store.is_finalized and not only_done:
            missing = format_ranges(store.missing_chunks()) or "none"
            raise PairStoreError(
                f"pair store {uri} is incomplete (missing chunks: {missing}; not finalized). "
                "Finish generation, or pass only_done=True to stream the done chunks."
            )
        self.seed = store.seed if seed is None else int(seed)
        self.epoch = 0
        # Reused in-process (opening costs ~10 ms); never pickled: reopened in spawned workers.
        self._store: PairStore | None = store
        # Buffers of finished iterations, reused by the next: fresh memory costs a page fault per
        # 4 KiB (~1 GB/s here), as much as reading the chunks into it. Never pickled.
        self._spare: list[list[np.ndarray]] = []
        self._refresh(store)

    def _refresh(self, store: PairStore) -> None:
        """Snapshot which chunks to stream (taken in the main process so all workers agree)."""
        done = store.done_mask() if self.only_done else np.ones(store.n_chunks, dtype=bool)
        self.chunk_ids = [int(i) for i in np.flatnonzero(done)]
        self._sizes = {
            i: store.chunk_bounds(i)[1] - store.chunk_bounds(i)[0] for i in self.chunk_ids
        }

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's shuffle; with only_done, also pick up chunks finished since."""
        self.epoch = int(epoch)
        if self.only_done:
            self._refresh(PairStore.open(self.uri, mode="r"))

    def rank_chunks(self, epoch: int) -> list[int]:
        """Chunk ids this rank streams in ``epoch``, in order (all its workers together)."""
        order = np.arange(len(self.chunk_ids))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.chunk_ids))
        return [self.chunk_ids[j] for j in order[self.rank :: self.world_size]]

    @property
    def n_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return sum(self._sizes[i] for i in self.rank_chunks(0))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_store"] = None  # zarr handles hold event-loop state; reopen in the worker
        state["_spare"] = []  # buffers stay in this process
        return state

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self.epoch
        self.epoch += 1  # advances persistent workers and in-process iteration
        if self._store is None:
            self._store = PairStore.open(self.uri, mode="r")
        mine = self.rank_chunks(epoch)[worker::n_workers]
        groups = [mine[g : g + self.buffer_chunks] for g in range(0, len(mine), self.buffer_chunks)]
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker, 1])
        pools = [self._take_pool(mine) for _ in range(2 if self.prefetch else 1)]
        buffers = self._buffers(groups, pools)
        try:
            yield from self._batches(groups, pools, buffers, rng)
        finally:
            buffers.close()  # waits for a prefetching reader before its pool is handed back
            self._spare = (self._spare + pools)[-2:]  # at most what one prefetching epoch uses

    def _batches(self, groups, pools, buffers, rng) -> Iterator[Batch]:
        """Shuffled batches of each buffer; a short remainder is carried into the next one."""
        head = self.batch_size  # room before each pool's chunks for the last buffer's remainder
        carried = 0  # samples of the last buffer waiting in front of the next one
        for k, (pool, n) in enumerate(buffers):
            live = carried + n
            order = head - carried + (rng.permutation(live) if self.shuffle else np.arange(live))
            full = live // self.batch_size * self.batch_size
            for s in range(0, full, self.batch_size):
                yield _gather(pool, order[s : s + self.batch_size])
            # The remainder goes right before the next buffer's chunks, so every batch but the
            # last is full. It is moved now, before that region can be read over (one pool), and
            # it never touches the chunk region the reader may be filling (two pools).
            rest, nxt = order[full:], pools[(k + 1) % len(pools)]
            for a, b in zip(nxt, pool, strict=True):
                a[head - len(rest) : head] = b[rest]  # fancy indexing copies first: overlap is safe
            carried = len(rest)
        if carried and not self.drop_last:
            yield _gather(pools[len(groups) % len(pools)], np.arange(head - carried, head))

    def _buffers(
        self, groups: list[list[int]], pools: list[list[np.ndarray]]
    ) -> Iterator[tuple[list[np.ndarray], int]]:
        """Yield (pool, samples read) per chunk group; with two pools, group k + 1 is read on a
        background thread while the caller consumes group k.

        Why a thread: reading is file I/O, checksums and copies that release the GIL, while the
        consumer is usually a training step (which releases it too), so a refill no longer
        stalls training. The thread only writes a pool's chunk region; the caller writes the
        remainder into the region in front of it, and a pool is refilled only after the caller
        asked for the next one.
        """
        if len(pools) == 1:
            for group in groups:
                yield pools[0], self._read_group(pools[0], group)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="pairstream-prefetch") as reader:
            nxt = reader.submit(self._read_group, pools[0], groups[0]) if groups else None
            for k in range(len(groups)):
                n = nxt.result()  # re-raises the reader's error (e.g. ChunkCorruptError) here
                if k + 1 < len(groups):
                    nxt = reader.submit(self._read_group, pools[(k + 1) % 2], groups[k + 1])
                yield pools[k % 2], n

    def _read_group(self, pool: list[np.ndarray], group: list[int]) -> int:
        """Read ``group``'s chunks whole into ``pool`` after its head room; returns samples read."""
        fill = self.batch_size
        for i in group:
            m = self._sizes[i]
            # Straight into the reused pool: no fresh memory per chunk, no concatenate.
            self._read_chunk(i, [a[fill : fill + m] for a in pool])
            fill += m
        return fill - self.batch_size

    def _read_chunk(self, i: int, out: list[np.ndarray]) -> None:
        """Read chunk ``i`` into ``out``, checksums verified.

        The done marker is not read again here: the chunk list was taken from a finalized store
        or from the markers themselves (_refresh), and a marker read costs a zarr round trip.
        """
        read_arrays(self._store, i, out)

    def _take_pool(self, chunk_ids: list[int]) -> list[np.ndarray]:
        """x0, x1, y buffers for ``buffer_chunks`` chunks plus a carried-over partial batch.

        A spare pool of a finished iteration is reused when big enough; an iteration still
        running (two iterators at once) keeps its pools, so the other one gets new ones.
        """
        biggest = max((self._sizes[i] for i in chunk_ids), default=0)
        cap = self.buffer_chunks * biggest + self.batch_size
        for j, pool in enumerate(self._spare):
            if len(pool[0]) >= cap:
                return self._spare.pop(j)
        shape = self._store.sample_shape
        return [
            np.empty((cap, *shape), np.float32),
            np.empty((cap, *shape), np.float32),
            np.empty(cap, np.int64),
        ]


def _gather(pool: list[np.ndarray], idx: np.ndarray) -> Batch:
    """One batch as fresh tensors (copies: the pool is overwritten by the next buffer)."""
    x0, x1, y = (torch.from_numpy(a[idx]) for a in pool)
    return x0, x1, y
