"""Training batches that can say where they stand and continue from there.

A batch source for :func:`rf_core.training.fit` is an iterable of ``(x0, x1, y)``. One that also
has ``state_dict()`` / ``load_state_dict(state)`` (:class:`Resumable`) can be resumed: its state
is the epoch, the position inside it and whatever random state decides the rest of the epoch,
all plain tensors and numbers (``torch.load(weights_only=True)`` reads them back). Restoring it
continues the exact batch sequence an uninterrupted run would have seen.

Under data-parallel training every process draws the whole global batch's order and noise from
the same seeded generator and keeps its own rows (``rank``, ``world``), so the samples of a step
do not depend on the number of processes, and the data state is the same in every process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

Batch = tuple[Tensor, Tensor, Tensor]


@runtime_checkable
class Resumable(Protocol):
    """A batch source whose position can be saved and restored."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def independent_coupling(
    x1: Tensor, y: Tensor, generator: torch.Generator, rank: int = 0, world: int = 1
) -> Batch:
    """1-RF coupling: pair each data point with fresh Gaussian noise.

    The noise is drawn for the global batch of ``B * world`` rows and process ``rank`` keeps its
    own, so every process's generator stays in step and a step's noise does not depend on the
    number of processes (``world=1``: the noise of ``x1``'s shape).

    Args:
        x1: (B, *shape) data of this process.
        y: (B,) labels.
        generator: RNG for the noise (on x1's device).
        rank, world: this process and the number of data-parallel processes.

    Returns:
        (x0, x1, y) with x0 ~ N(0, I) of x1's shape.
    """
    b = x1.shape[0]
    shape = (b * world, *x1.shape[1:])
    x0 = torch.randn(shape, generator=generator, device=x1.device, dtype=x1.dtype)
    return x0[rank * b : (rank + 1) * b], x1, y


class Minibatches:
    """Endless shuffled minibatches of tensors sharing dim 0, reshuffled every epoch; resumable.

    Each epoch draws ``torch.randperm(n, generator)`` and cuts it into ``n // (batch_size *
    world)`` global batches; process ``rank`` gets rows ``[rank * batch_size, (rank + 1) *
    batch_size)`` of each.

    Args:
        tensors: tensors sharing their first dimension (rows stay aligned).
        batch_size: rows per batch of this process.
        generator: the order's RNG (shared with a coupling's noise by :class:`IndependentBatches`).
        rank, world: this process and the number of processes.
    """

    def __init__(
        self,
        tensors: tuple[Tensor, ...],
        batch_size: int,
        generator: torch.Generator,
        rank: int = 0,
        world: int = 1,
    ):
        n = tensors[0].shape[0]
        if any(t.shape[0] != n for t in tensors):
            raise ValueError(f"tensors disagree on length: {[t.shape[0] for t in tensors]}")
        if not 0 < batch_size * world <= n:
            raise ValueError(
                f"batch_size must be in 1..{n} (the data size), got {batch_size * world}"
                + (f" ({world} processes x {batch_size})" if world > 1 else "")
            )
        if not 0 <= rank < world:
            raise ValueError(f"need 0 <= rank < world, got rank={rank}, world={world}")
        self.tensors, self.generator = tensors, generator
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.epoch, self.position, self.perm = -1, 0, None  # the first epoch starts on demand

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world

    def __iter__(self) -> Minibatches:
        return self

    def __next__(self) -> tuple[Tensor, ...]:
        n, g = self.tensors[0].shape[0], self.global_batch
        if self.perm is None or self.position >= n // g:
            self.perm = torch.randperm(n, generator=self.generator)
            self.epoch, self.position = self.epoch + 1, 0
        start = self.position * g + self.rank * self.batch_size
        idx = self.perm[start : start + self.batch_size].to(self.tensors[0].device)
        self.position += 1
        return tuple(t[idx] for t in self.tensors)

    def state_dict(self) -> dict[str, Any]:
        """Epoch, batches taken in it, its permutation and the generator's state."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "perm": self.perm,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position, self.perm = state["epoch"], state["position"], state["perm"]
        self.generator.set_state(state["generator"])


class IndependentBatches:
    """Endless 1-RF batches: shuffled data minibatches, each paired with fresh noise; resumable.

    The noise of the whole global batch is drawn after its order (one generator for both), and
    each process keeps its rows, so every process's generator stays in step.
    """

    def __init__(
        self,
        x1: Tensor,
        y: Tensor,
        batch_size: int,
        generator: torch.Generator,
        rank: int = 0,
        world: int = 1,
    ):
        self.rows = Minibatches((x1, y), batch_size, generator, rank, world)

    def __iter__(self) -> IndependentBatches:
        return self

    def __next__(self) -> Batch:
        xb, yb = next(self.rows)
        return independent_coupling(xb, yb, self.rows.generator, self.rows.rank, self.rows.world)

    def state_dict(self) -> dict[str, Any]:
        return self.rows.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows.load_state_dict(state)


def minibatches(
    tensors: tuple[Tensor, ...], batch_size: int, generator: torch.Generator
) -> Iterator[tuple[Tensor, ...]]:
    """Endless shuffled minibatches of tensors sharing dim 0 (reshuffled every epoch)."""
    return Minibatches(tensors, batch_size, generator)


# The name rf_core.training exports for building the 1-RF batches (one definition: the class).
independent_batches = IndependentBatches
