"""Training-time distributions over t in [0, 1].

- ``uniform``: U[0, 1] (Liu et al., Rectified Flow).
- ``logit_normal``: sigmoid of N(0, 1) (SD3), mass around t = 0.5.
- ``u_shaped``: RF++ (Lee et al., 2024) puts more mass near both ends, where reflow errs most.
  We use the density ``p(t) ∝ cosh(a (2t - 1))`` with ``a = 4``, a symmetric U on [0, 1], and
  sample it exactly by inverting its CDF ``F(t) = (sinh(a (2t - 1)) + sinh a) / (2 sinh a)``.
- ``zero``: t ≡ 0, the one-step distillation objective ``x0 + v(x0, 0) ≈ x1`` (see rf_core.distill).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

T_SAMPLERS = ("uniform", "logit_normal", "u_shaped", "zero")
U_SHAPE_A = 4.0


def sample_t(
    n: int,
    kind: str = "uniform",
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> Tensor:
    """Draw n training times.

    Args:
        n: number of times (>= 0).
        kind: one of ``uniform``, ``logit_normal``, ``u_shaped``, ``zero``.
        generator: RNG for reproducibility; draws happen on its device, then move to ``device``.
        device: device of the result (default: the generator's, else CPU).

    Returns:
        (n,) float32 tensor in [0, 1].
    """
    if kind not in T_SAMPLERS:
        raise ValueError(f"kind={kind!r} is unknown; allowed: {', '.join(T_SAMPLERS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    if kind == "zero":
        t = torch.zeros(n, device=gen_device)
    elif kind == "logit_normal":
        t = torch.sigmoid(torch.randn(n, generator=generator, device=gen_device))
    else:
        u = torch.rand(n, generator=generator, device=gen_device)
        if kind == "u_shaped":
            s = math.sinh(U_SHAPE_A)
            t = (torch.asinh((2 * u - 1) * s) / U_SHAPE_A + 1) / 2
        else:
            t = u
    return t.clamp(0.0, 1.0).to(device if device is not None else gen_device)
