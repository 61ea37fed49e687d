"""1-RF batches streamed from a map-style dataset by DataLoader workers, resumable.

The in-memory path (:class:`rf_core.batches.IndependentBatches`) indexes tensors; a set on disk
(or one with random flips) is read by ``DataLoader`` workers instead. Both follow the same rules
so that a stage can be stopped and resumed, and spread over processes:

- the order of an epoch is ``randperm`` from a generator seeded by ``(seed, epoch)``, so the
  position in it (epoch, batches taken) is all a resume needs to rebuild the rest of the epoch;
- flips and noise come from one generator in this process, drawn for the whole global batch of
  ``batch_size * world`` rows, of which process ``rank`` keeps its own rows: the samples of a step
  do not depend on the number of processes, nor on the number of workers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from rf_core.batches import Batch, independent_coupling

_EPOCH_STRIDE = 1_000_003  # seeds of successive epochs' orders: seed * stride + epoch


def hflip(x: Tensor, generator: torch.Generator, rank: int = 0, world: int = 1) -> Tensor:
    """Mirror each image of (B, C, H, W) left-right with probability 1/2: one draw per image of
    the global batch of ``B * world`` images, of which these are the rows of process ``rank``."""
    b = len(x)
    flip = (torch.rand(b * world, generator=generator) < 0.5)[rank * b : (rank + 1) * b]
    return torch.where(flip[:, None, None, None].to(x.device), x.flip(-1), x)


class LoaderBatches:
    """Endless (x0, x1, y) batches of a dataset, read by ``workers`` DataLoader processes.

    Args:
        dataset: yields ``(x (C, H, W) float32, y int64)``.
        batch_size: samples per batch of this process (capped at the set's share per process).
        seed: seeds the order, the flips and the noise.
        workers: DataLoader worker processes (0 reads in this process).
        flip: mirror images left-right at random.
        labels: False trains unconditionally: every y is -1.
        rank, world: this process and the number of data-parallel processes.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        workers: int = 0,
        flip: bool = False,
        labels: bool = True,
        rank: int = 0,
        world: int = 1,
    ):
        n = len(dataset)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("dataset is empty")
        if not 0 <= rank < world or n < world:
            raise ValueError(f"need 0 <= rank < world <= {n} (the set's size), got {rank}, {world}")
        self.dataset, self.n, self.seed, self.workers = dataset, n, seed, workers
        self.batch_size = min(batch_size, n // world)
        self.flip, self.labels, self.rank, self.world = flip, labels, rank, world
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.position, self._it = 0, 0, None

    def _index_batches(self) -> list[list[int]]:
        """This process's index batches of the current epoch from ``position`` on (full
        global batches only)."""
        g = torch.Generator().manual_seed(self.seed * _EPOCH_STRIDE + self.epoch)
        perm, gb = torch.randperm(self.n, generator=g), self.batch_size * self.world
        start = self.rank * self.batch_size
        return [
            perm[b * gb + start : b * gb + start + self.batch_size].tolist()
            for b in range(self.position, self.n // gb)
        ]

    def _loader(self):
        # a new loader per epoch: the rest of the epoch's order is its batch sampler
        loader = DataLoader(
            self.dataset, batch_sampler=self._index_batches(), num_workers=self.workers
        )
        return iter(loader)

    def __iter__(self) -> LoaderBatches:
        return self

    def __next__(self) -> Batch:
        if self._it is None:
            self._it = self._loader()
        try:
            x1, y = next(self._it)
        except StopIteration:
            self.epoch, self.position = self.epoch + 1, 0
            self._it = self._loader()
            x1, y = next(self._it)
        self.position += 1
        return self._couple(x1, y)

    def _couple(self, x1: Tensor, y: Tensor) -> Batch:
        """Flips and noise drawn for the global batch; this process's rows kept."""
        if self.flip:
            x1 = hflip(x1, self.generator, self.rank, self.world)
        y = y if self.labels else torch.full_like(y, -1)
        return independent_coupling(x1, y, self.generator, self.rank, self.world)

    def state_dict(self) -> dict[str, Any]:
        """Epoch, batches taken in it, and the flip and noise generator's state."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.generator.set_state(state["generator"])
        self._it = None  # the rest of the epoch is rebuilt from the position
