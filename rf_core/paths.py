"""The straight (rectified) probability path between noise and data."""

from __future__ import annotations

from torch import Tensor


def _expand(t: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against x."""
    return t.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


def interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """Point on the straight line ``x_t = (1 - t) x0 + t x1``.

    Args:
        x0: (B, *shape) noise.
        x1: (B, *shape) data or ODE endpoint.
        t: (B,) times in [0, 1].

    Returns:
        (B, *shape) x_t.
    """
    tt = _expand(t, x0)
    return (1 - tt) * x0 + tt * x1


def target_velocity(x0: Tensor, x1: Tensor) -> Tensor:
    """Constant velocity of the straight path, ``x1 - x0``: (B, *shape) -> (B, *shape)."""
    return x1 - x0
