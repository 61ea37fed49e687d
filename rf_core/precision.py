"""Mixed precision and fast math of a training step: bf16 autocast, TF32 on CUDA, compile.

Master weights, gradients, the optimizer and the EMA stay fp32; bf16 autocast only runs the
forward's matmuls and convolutions in bf16 (no loss scaling is needed: bf16 has fp32's range).
TF32 matmuls are switched on for the duration of a CUDA training run only, and restored after,
so pair generation in the same process keeps strict fp32 (its stores must resume identically).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")


class PrecisionError(ValueError):
    """The requested precision cannot run on the training device."""


def check_precision(
    precision: str, device: str | torch.device, capability: tuple[int, int] | None = None
) -> None:
    """Refuse bf16 on a device without it (CUDA before compute capability 8.0, MPS).

    Args:
        precision: ``fp32`` or ``bf16``.
        device: the training device.
        capability: the CUDA device's compute capability; read from the device when None.

    Raises:
        PrecisionError: naming the device and what to use instead.
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision {precision!r} is unknown; allowed: fp32, bf16")
    dev = torch.device(device)
    if precision != "bf16" or dev.type == "cpu":
        return  # bf16 autocast runs on every CPU (emulated where the CPU lacks bf16 units)
    if dev.type == "cuda":
        cap = capability or torch.cuda.get_device_capability(dev)
        if cap >= (8, 0):
            return
        why = f"{dev} has compute capability {cap[0]}.{cap[1]}; bf16 needs 8.0 (Ampere) or newer"
    else:
        why = f"bf16 autocast is not supported on {dev.type} here"
    raise PrecisionError(f"precision bf16: {why}; use fp32")


def autocast(precision: str, device: torch.device) -> Any:
    """The forward's autocast context: bf16 for ``precision == "bf16"``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


@contextmanager
def tf32(device: torch.device) -> Iterator[None]:
    """TF32 matmuls and convolutions while training on CUDA; the previous flags after."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


class Forward(nn.Module):
    """The network a step calls (a DDP wrapper, a compiled module, or the model itself) with
    the model's ``config`` (what :func:`rf_core.losses.rf_loss` checks inputs against)."""

    def __init__(self, net: nn.Module, config: Any):
        super().__init__()
        self.net, self.config = net, config

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, y)
