"""Data-parallel training with ``torch.distributed``: one process per device.

:class:`World` is a process's place in a run (rank, number of processes); :data:`SINGLE` is
the one-process run that needs no process group. The collectives here are the few that
:func:`rf_core.training.fit` needs besides DDP's gradient all-reduce: averaging logged losses,
gathering each process's random and data state for a training state, and checking that every
replica holds the same weights. ``gloo`` works on CPUs (the tests), ``nccl`` on GPUs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

TIMEOUT = timedelta(minutes=30)  # a slow rank (a state being written) must not time out


@dataclass(frozen=True)
class World:
    """This process's place in data-parallel training.

    Attributes:
        rank: 0 .. size - 1; rank 0 writes states and logs.
        size: number of processes (devices).
    """

    rank: int = 0
    size: int = 1

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def backend_for(device: str | torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def init(address: str, world: World, device: str | torch.device) -> None:
    """Join the process group at ``address`` (``tcp://host:port``; rank 0 listens there)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(
        backend_for(dev), init_method=address, rank=world.rank, world_size=world.size,
        timeout=TIMEOUT,
    )  # fmt: skip


def close(sync: bool = False) -> None:
    """Leave the process group (so a later stage in this process can start another).

    Args:
        sync: wait at a barrier for every process first (the success path; every rank must
            pass the same value). Without it, a rank that leaves while another is still busy
            (rank 0 writing its last state) closes its sockets under the other's gloo threads,
            which then abort the other process on "Connection reset by peer". After a failure
            (a dead rank) the barrier could only hang, so leave unsynchronised then.
    """
    if not dist.is_initialized():
        return
    try:
        if sync and dist.get_world_size() > 1:
            dist.barrier()
    finally:
        dist.destroy_process_group()


def broadcast(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` in every process (pickled: plain data only)."""
    if not world.parallel:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, world: World) -> list[Any] | None:
    """Every process's ``obj``, in rank order, on rank 0 (None on the others)."""
    if not world.parallel:
        return [obj]
    out = [None] * world.size if world.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def mean(values: torch.Tensor, world: World) -> torch.Tensor:
    """The element-wise mean of ``values`` over the processes (``values`` itself when alone)."""
    if not world.parallel:
        return values
    total = values.detach().clone()
    dist.all_reduce(total)
    return total / world.size


def weights_digest(model: nn.Module) -> str:
    """sha256 of the bytes of every parameter and buffer (replicas must agree bit for bit)."""
    h = hashlib.sha256()
    for name, v in model.state_dict().items():
        h.update(name.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_replicas(model: nn.Module, world: World, step: int) -> str:
    """The weights' digest, after checking it is the same in every process.

    Raises:
        RuntimeError: naming the ranks whose weights differ from rank 0's.
    """
    mine = weights_digest(model)
    if world.parallel:
        every = [None] * world.size
        dist.all_gather_object(every, mine)
        odd = [r for r, d in enumerate(every) if d != every[0]]
        if odd:
            raise RuntimeError(
                f"data-parallel replicas diverged at step {step}: ranks {odd} hold other "
                "weights than rank 0 (gradients not all-reduced?)"
            )
    return mine
