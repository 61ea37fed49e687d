"""One training run's optimizer, schedule, EMA and step, and the state that resumes them.

:class:`Run` holds what :func:`rf_core.training.fit` updates every step. Its :meth:`Run.state`
is the payload of a training state (:mod:`rf_core.train_state`): the weights, EMA, optimizer
and schedule shared by every process, plus each process's own random state and data position
(gathered to rank 0, which writes them).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from rf_core import distributed
from rf_core.batches import Resumable
from rf_core.config import TrainConfig
from rf_core.distributed import World
from rf_core.losses import rf_loss
from rf_core.precision import Forward, autocast
from rf_core.schedules import make_ema, make_scheduler
from rf_core.timesteps import sample_t


def process_seed(seed: int, rank: int) -> int:
    """The global torch seed of process ``rank`` (dropout draws differ between processes)."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


class Run:
    """Optimizer (AdamW), schedule, EMA, time sampler and the network a step calls.

    Args:
        model: the velocity field, on ``device``, in train mode.
        cfg: the training settings.
        device: where it trains.
        world: this process's place among the data-parallel processes.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device, world: World):
        self.model, self.cfg, self.device, self.world = model, cfg, device, world
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = make_scheduler(self.opt, cfg)
        self.ema = make_ema(model, cfg)
        self.gen = torch.Generator().manual_seed(cfg.seed)  # times drawn on CPU: any device
        self.ddp: DistributedDataParallel | None = None
        self.net = model

    def wrap(self) -> None:
        """DDP (which makes every replica start from rank 0's weights) and compile, once the
        weights are final (after a resume)."""
        net: nn.Module = self.model
        if self.world.parallel:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        if self.cfg.compile:
            net = torch.compile(net)
        self.net = self.model if net is self.model else Forward(net, self.model.config)

    def step(self, x0: Tensor, x1: Tensor, y: Tensor) -> Tensor:
        """One optimizer step on this process's batch; returns its (detached) loss."""
        t = self._times(x0.shape[0])
        self.opt.zero_grad(set_to_none=True)
        loss = self._backward(x0, x1, y, t)
        if self.cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        if self.sched is not None:
            self.sched.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return loss

    def _times(self, n: int) -> Tensor:
        """Times of the whole global batch from one generator, this process's share of them:
        the same draws as one process training on all of the global batch."""
        w = self.world
        t = sample_t(n * w.size, self.cfg.t_sampler, generator=self.gen)
        return (t[w.rank * n : (w.rank + 1) * n] if w.parallel else t).to(self.device)

    def _backward(self, x0: Tensor, x1: Tensor, y: Tensor, t: Tensor) -> Tensor:
        """Gradients of the batch's mean loss, in ``accumulation`` micro-steps (all-reduced by
        DDP on the last one only)."""
        cfg, n = self.cfg, x0.shape[0]
        if cfg.accumulation == 1:
            with autocast(cfg.precision, self.device):
                loss = rf_loss(self.net, x0, x1, y, t, kind=cfg.loss)
            loss.backward()
            return loss.detach()
        parts = list(zip(*(v.tensor_split(cfg.accumulation) for v in (x0, x1, y, t)), strict=True))
        total = torch.zeros((), device=self.device)
        for i, (a0, a1, ay, at) in enumerate(parts):
            last = i == len(parts) - 1
            with self.ddp.no_sync() if self.ddp is not None and not last else nullcontext():
                with autocast(cfg.precision, self.device):
                    loss = rf_loss(self.net, a0, a1, ay, at, kind=cfg.loss) * (len(a0) / n)
                loss.backward()
            total += loss.detach()
        return total

    # -----------------------------------------------------------------------------------------
    # training state

    def shared_state(self) -> dict[str, Any]:
        """Weights, EMA, optimizer and schedule: the same in every process."""
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
        }

    def local_state(self, batches: Iterable[Any]) -> dict[str, Any]:
        """This process's random states and data position."""
        cuda = self.device.type == "cuda"
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
            "t": self.gen.get_state(),
            "data": batches.state_dict() if isinstance(batches, Resumable) else None,
        }

    def restore(self, payload: dict[str, Any], batches: Iterable[Any]) -> None:
        """Continue from a training state written by a run of the same settings.

        Raises:
            ValueError: the state was written by another number of processes.
        """
        ranks = payload["ranks"]
        if len(ranks) != self.world.size:
            raise ValueError(
                f"the training state was written by {len(ranks)} processes, this run has "
                f"{self.world.size}: resume with the same number of devices"
            )
        self.model.load_state_dict(payload["model"])
        self.opt.load_state_dict(payload["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(payload["ema"])
        if self.sched is not None:
            self.sched.load_state_dict(payload["scheduler"])
        mine = ranks[self.world.rank]
        self.gen.set_state(mine["t"])
        torch.set_rng_state(mine["torch"])
        if mine["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], self.device)
        if isinstance(batches, Resumable):
            batches.load_state_dict(mine["data"])

    def state(self, step: int, losses: list[Tensor], logged: list[tuple[int, float]], batches):
        """The payload of a training state at ``step`` (a collective: every process calls it;
        rank 0 gets the payload, the others None)."""
        ranks = distributed.gather(self.local_state(batches), self.world)
        if not self.world.is_main:
            return None
        payload = self.shared_state()
        payload |= {"ranks": ranks, "losses": torch.stack(losses).cpu(), "logged": list(logged)}
        return payload | {"step": step}
