"""One process of a data-parallel test training (started by torch.multiprocessing, spawn).

It trains with the product's pieces -- rf_core.distributed.init (gloo), fit(world=...), a rank's
PairStream share or in-memory batches -- and records what a test needs to see: the weights'
digest after every logged step, the x0 rows it trained on per epoch, its final weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rf_core import distributed
from rf_core.config import ModelConfig, TrainConfig
from rf_core.distributed import World, weights_digest
from rf_core.models import build_model
from rf_core.training import fit, independent_batches
from storage.stream import PairStream


class Recording:
    """A resumable batch source that notes each batch's x0 rows (as bytes) by epoch."""

    def __init__(self, stream: PairStream):
        self.stream, self.rows = stream, {}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for batch in self.stream:
            epoch = self.stream.state_dict()["epoch"]
            self.rows.setdefault(epoch, []).extend(r.numpy().tobytes() for r in batch[0])
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


def train(
    rank: int, world: int, address: str | None, spec: dict[str, Any], out: str
) -> dict[str, Any]:
    """Train as ``rank`` of ``world`` (no process group when ``world == 1``); ``spec``: model,
    train (dicts), and either ``store`` (a pair store) or ``data`` (x1, y tensors)."""
    torch.set_num_threads(1)
    w = World(rank, world)
    if w.parallel:
        distributed.init(address, w, "cpu")
    try:
        cfg = TrainConfig.model_validate(spec["train"])
        torch.manual_seed(cfg.seed)
        model = build_model(ModelConfig.model_validate(spec["model"]))
        init = spec.get("init")  # a checkpoint to start from (reflow)
        share = cfg.batch_size // world
        if "store" in spec:
            batches = Recording(PairStream(spec["store"], share, seed=cfg.seed, rank=rank,
                                           world_size=world))  # fmt: skip
        else:
            g = torch.Generator().manual_seed(cfg.seed)
            batches = independent_batches(*spec["data"], share, g, rank, world)
        digests: list[tuple[int, str]] = []

        def log(step: int, loss: float) -> None:
            digests.append((step, weights_digest(model)))

        res = fit(model, batches, cfg, callback=log, init_from=init, world=w)
        record = {
            "digests": digests, "rows": getattr(batches, "rows", {}),
            "weights": res.model.state_dict(), "losses": res.losses,
        }  # fmt: skip
        torch.save(record, Path(out) / f"rank{rank}.pt")
        return record
    finally:
        distributed.close()


def spawned(rank: int, world: int, address: str, spec: dict[str, Any], out: str) -> None:
    """torch.multiprocessing entry point."""
    train(rank, world, address, spec, out)
