"""Stream (x0, x1, y) batches from a pair store into training, one whole chunk read at a time.

Local chunks are memory-mapped and checksummed rather than copied (storage.fastread), and each
batch is gathered straight from the mapped chunks of its buffer into fresh arrays.

Each epoch the chunk order is shuffled with a generator seeded by (seed, epoch) -- the same order in
every rank and DataLoader worker, so they can split it without talking: rank r takes every
world_size-th chunk, then worker w of that rank every num_workers-th of those. Samples are shuffled
inside a buffer of ``buffer_chunks`` chunks, so memory is bounded by the buffer (two buffers with
prefetching: the next is read while the current one is consumed), never by n.

A stream iterated in-process can be resumed (:meth:`PairStream.state_dict`): its state is the
epoch and the batches taken from it. Restored, the stream skips those batches without reading
the chunks they came from (the shuffle of a skipped buffer needs only the chunk sizes) and
yields exactly the batches an uninterrupted iteration would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from storage.layout import PairStoreError, format_ranges
from storage.pairstore import PairStore

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Segment = tuple[np.ndarray, np.ndarray, np.ndarray]  # x0, x1, y rows of one chunk (or a remainder)


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
            (holds two buffers in memory instead of one; batches are identical either way).
            Delivers ~1.3x the samples/s in-process; off by default because on a 2-core CPU the
            reader takes a core from the training step's threads (BENCHMARKS.md, pair store).
            The pipeline turns it on when training runs on an accelerator.

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
        self._skip = 0  # batches of the next epoch to skip (a resumed position)
        self._at = (0, 0)  # (epoch, batches yielded from it) of the iteration in progress
        # Reused in-process (opening costs ~10 ms); never pickled: reopened in spawned workers.
        self._store: PairStore | None = store
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
        self.epoch, self._at = int(epoch), (int(epoch), 0)
        if self.only_done:
            self._refresh(PairStore.open(self.uri, mode="r"))

    def state_dict(self) -> dict[str, int]:
        """Where an in-process iteration stands: its epoch and the batches yielded from it
        (before any iteration: the next epoch, 0)."""
        return {"epoch": int(self._at[0]), "position": int(self._at[1])}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next iteration continue ``state``: its epoch, after its first ``position``
        batches."""
        self.epoch, self._skip = int(state["epoch"]), int(state["position"])
        self._at = (self.epoch, self._skip)

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
        return state

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        epoch, skip = self.epoch, self._skip
        self.epoch, self._skip = epoch + 1, 0  # advances persistent workers and in-process use
        self._at = (epoch, skip)
        if self._store is None:
            self._store = PairStore.open(self.uri, mode="r")
        mine = self.rank_chunks(epoch)[worker::n_workers]
        groups = [mine[g : g + self.buffer_chunks] for g in range(0, len(mine), self.buffer_chunks)]
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker, 1])
        first, carried, skip = self._skip_groups(groups, rng, skip)
        buffers = self._buffers(groups[first:])
        try:
            for batch in self._batches(buffers, rng, carried, skip):
                self._at = (epoch, self._at[1] + 1)
                yield batch
        finally:
            buffers.close()  # waits for a prefetching reader before the epoch ends

    def _skip_groups(
        self, groups: list[list[int]], rng: np.random.Generator, skip: int
    ) -> tuple[int, list[Segment], int]:
        """Pass over the buffers whose batches are all among the first ``skip`` without reading
        them: their shuffles are drawn (the rng must advance as it would have) and their
        remainder followed as (chunk, row) references. Returns the first buffer to read, the
        remainder carried into it (read now: only its rows' chunks), and the batches of that
        buffer still to skip."""
        if skip == 0:
            return 0, [], 0
        refs = np.empty((0, 2), dtype=np.int64)  # (chunk id, row) of the carried remainder
        for k, group in enumerate(groups):
            live = np.concatenate([refs, *(_refs(i, self._sizes[i]) for i in group)])
            n_batches = len(live) // self.batch_size
            if skip < n_batches:
                return k, self._rows(refs), skip
            order = rng.permutation(len(live)) if self.shuffle else np.arange(len(live))
            refs, skip = live[np.sort(order[n_batches * self.batch_size :])], skip - n_batches
        left = len(refs) > 0 and not self.drop_last and skip == 0  # the epoch's short last batch
        return len(groups), self._rows(refs) if left else [], 0

    def _rows(self, refs: np.ndarray) -> list[Segment]:
        """The rows ``refs`` ((chunk id, row) pairs) as one segment of fresh arrays."""
        if not len(refs):
            return []
        chunks = {int(i): self._read_chunk(int(i)) for i in np.unique(refs[:, 0])}
        out = _empty(list(chunks.values()), len(refs))
        for i, seg in chunks.items():
            at = refs[:, 0] == i
            for src, dst in zip(seg, out, strict=True):
                dst[at] = src[refs[at, 1]]
        return [out]

    def _batches(
        self,
        buffers: Iterator[list[Segment]],
        rng: np.random.Generator,
        carried: list[Segment] | None = None,
        skip: int = 0,
    ):
        """Shuffled batches of each buffer; a short remainder is carried into the next one.
        ``carried``: a remainder to start with; ``skip``: batches of the first buffer to drop."""
        carried = carried or []  # the last buffer's remainder, a segment of fresh arrays
        for chunks in buffers:
            segments = carried + chunks
            starts = np.cumsum([0] + [len(seg[2]) for seg in segments])
            live = int(starts[-1])
            order = rng.permutation(live) if self.shuffle else np.arange(live)
            full = live // self.batch_size * self.batch_size
            for s in range(skip * self.batch_size, full, self.batch_size):
                yield _as_tensors(_gather(segments, starts, order[s : s + self.batch_size]))
            skip = 0
            # Copied out now: the buffer's chunks are released when the next one is read.
            carried = [_gather(segments, starts, order[full:])] if full < live else []
            del segments, chunks  # unmapped before the next buffer is read, not after
        if carried and not self.drop_last:
            yield _as_tensors(carried[0])

    def _buffers(self, groups: list[list[int]]) -> Iterator[list[Segment]]:
        """Yield each group's chunks; with prefetch, group k + 1 is read on a background thread
        while the caller consumes group k.

        Why a thread: reading is mapping pages and checking crc32c, both outside the GIL, while
        the consumer is usually a training step (which releases it too), so a refill no longer
        stalls training.
        """
        if not self.prefetch:
            for group in groups:
                yield self._read_group(group)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="pairstream-prefetch") as reader:
            nxt = reader.submit(self._read_group, groups[0]) if groups else None
            for k in range(len(groups)):
                chunks = nxt.result()  # re-raises the reader's error (e.g. ChunkCorruptError) here
                more = k + 1 < len(groups)
                nxt = reader.submit(self._read_group, groups[k + 1]) if more else None
                yield chunks
                del chunks  # let the mappings go before the next group is taken

    def _read_group(self, group: list[int]) -> list[Segment]:
        return [self._read_chunk(i) for i in group]

    def _read_chunk(self, i: int) -> Segment:
        """Chunk ``i``'s (x0, x1, y) for reading, checksums verified (x0, x1 mapped when local).

        The done marker is not read again here: the chunk list was taken from a finalized store
        or from the markers themselves (_refresh), and a marker read costs a zarr round trip.
        """
        return self._store.view_chunk(i)


def _refs(chunk: int, n: int) -> np.ndarray:
    """(chunk, row) references of a chunk's ``n`` rows, shape (n, 2)."""
    return np.stack([np.full(n, chunk, dtype=np.int64), np.arange(n, dtype=np.int64)], 1)


def _empty(segments: list[Segment], n: int) -> Segment:
    """Fresh x0, x1, y arrays for ``n`` rows of ``segments``."""
    x0, x1, y = (np.empty((n, *a.shape[1:]), a.dtype) for a in segments[0])
    return x0, x1, y


def _gather(segments: list[Segment], starts: np.ndarray, idx: np.ndarray) -> Segment:
    """Rows ``idx`` of the segments laid end to end (``starts``: their offsets, then the total),
    as fresh arrays.

    The indices are sorted first, so each segment's rows are one contiguous slice of the output
    and one ``np.take`` each; a batch's rows come in buffer order (a batch is a sample of the
    buffer either way). ``mode="clip"`` only because ``"raise"`` copies ``out`` through a temporary;
    the indices are in range by construction.
    """
    idx = np.sort(idx)
    cuts = np.searchsorted(idx, starts)
    out = _empty(segments, len(idx))
    for k, seg in enumerate(segments):
        a, b = cuts[k], cuts[k + 1]
        if a < b:
            rows = idx[a:b] - starts[k]
            for src, dst in zip(seg, out, strict=True):
                np.take(src, rows, axis=0, out=dst[a:b], mode="clip")
    return out


def _as_tensors(seg: Segment) -> Batch:
    x0, x1, y = (torch.from_numpy(a) for a in seg)
    return x0, x1, y
