"""Draw samples from a trained velocity model: noise for a seed, labels, an ODE solve, in batches.

:func:`sample` is what the ``rectiflow sample`` command and the MLflow sampler call. The noise of
sample ``i`` depends only on ``(seed, i // NOISE_BLOCK)``, never on the batch size or the device,
so the first 64 samples of ``n = 1000`` are the 64 samples of ``n = 64`` with the same seed, and
a seed gives the same images on every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rf_core.guidance import check_guidance
from rf_core.solver_spec import SolverSpec
from rf_core.solvers import ADAPTIVE_METHODS, solve_ode

NOISE_BLOCK = 256  # samples per noise generator: the unit that makes noise batch-independent
DEFAULT_BATCH = 256


@dataclass(frozen=True)
class SampleResult:
    """Samples of :func:`sample`.

    Attributes:
        x: (N, *data_shape) float32 samples on the CPU; images are clamped to [-1, 1].
        y: (N,) int64 labels they were drawn for (-1 = unconditional).
        nfe: model evaluations per sample (both evaluations of a guided step counted).
    """

    x: Tensor
    y: Tensor
    nfe: int


def sample_labels(
    n: int | None,
    num_classes: int,
    labels: Sequence[int] | None = None,
    per_class: int | None = None,
) -> Tensor:
    """The labels of a sampling request: ``labels`` cycled to ``n``; or ``per_class`` of every
    class (class 0 first); or, with neither, ``0, 1, ..., C-1, 0, ...`` (-1 for an unconditional
    model).

    Raises:
        ValueError: naming ``n``, ``labels`` or ``per_class`` when they do not make a request.
    """
    if per_class is not None:
        if labels is not None or n is not None:
            raise ValueError("per_class: give per_class alone, not with n or labels")
        if per_class <= 0 or num_classes == 0:
            raise ValueError(
                f"per_class must be > 0 and needs a class-conditional model, got {per_class} "
                f"with {num_classes} classes"
            )
        return torch.arange(num_classes).repeat_interleave(per_class)
    if n is None or n <= 0:
        raise ValueError(f"n must be a positive number of samples, got {n}")
    if labels is not None:
        if not labels:
            raise ValueError("labels: give at least one label")
        return torch.tensor(list(labels), dtype=torch.long).repeat(-(-n // len(labels)))[:n]
    return torch.arange(n) % num_classes if num_classes else torch.full((n,), -1)


def sampling_solver(method: str = "euler", steps: int = 1) -> SolverSpec:
    """The solver of a sampling request: a fixed-step ``method`` with ``steps`` steps, or an
    adaptive one (dopri5, ...) at its default tolerance, which picks its own steps.

    Raises:
        ValueError: an unknown method or bad steps, naming ``solver['...']``.
    """
    adaptive = method in ADAPTIVE_METHODS
    return SolverSpec.from_dict({"method": method} | ({} if adaptive else {"steps": steps}))


def block_seed(seed: int, block: int) -> int:
    """A 63-bit seed from (seed, block) only (a hash: no collisions between nearby seeds)."""
    digest = hashlib.sha256(f"rf-sample/{seed}/{block}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_noise(shape: Sequence[int], start: int, stop: int, seed: int) -> Tensor:
    """x0 ~ N(0, I) of samples ``start..stop-1`` for ``seed``, drawn on the CPU.

    Returns:
        (stop - start, *shape) float32.
    """
    parts = []
    for block in range(start // NOISE_BLOCK, -(-stop // NOISE_BLOCK)):
        gen = torch.Generator().manual_seed(block_seed(seed, block))
        noise = torch.randn((NOISE_BLOCK, *shape), generator=gen)
        lo = max(start - block * NOISE_BLOCK, 0)
        parts.append(noise[lo : min(stop - block * NOISE_BLOCK, NOISE_BLOCK)])
    return torch.cat(parts)


def sample(
    model: nn.Module,
    labels: Tensor,
    *,
    steps: int | None = None,
    solver: SolverSpec | None = None,
    guidance: float | None = None,
    seed: int = 0,
    label_dropout: float = 0.0,
    batch_size: int = DEFAULT_BATCH,
    device: str | torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
    name: str = "the model",
) -> SampleResult:
    """Sample ``len(labels)`` images (or points) from ``model``.

    Args:
        model: velocity field with ``.config``.
        labels: (N,) int64 labels, -1 = unconditional (see :func:`sample_labels`).
        steps: Euler steps (give ``steps`` or ``solver``, not both).
        solver: any solver recipe (its ``batch_size`` and ``compile`` are not used here).
        guidance: classifier-free guidance scale ``w``; None = the solver's (0 without one).
        seed: noise seed.
        label_dropout: the ``train.label_dropout`` the model was trained with
            (:func:`rf_core.guidance.label_dropout_of`); 0 refuses guidance and label -1 on a
            class-conditional model.
        batch_size: samples per solve.
        device: where to solve (default: the model's device); results come back on the CPU.
        progress: called as ``progress(done, total)`` after every batch.
        name: the model as error messages name it.

    Returns:
        SampleResult with x (N, *data_shape) on the CPU, y and the NFE per sample.

    Raises:
        ValueError: bad steps/solver/batch size, or labels/guidance the model cannot take.
    """
    if (steps is None) == (solver is None):
        raise ValueError("give steps (Euler) or solver, not both and not neither")
    spec = solver if solver is not None else SolverSpec(method="euler", steps=steps)
    w = spec.guidance if guidance is None else guidance
    cfg = model.config
    check_guidance(cfg.num_classes, label_dropout, labels, w, name)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    kwargs = spec.solve_kwargs() | {"batch_size": None, "guidance": w}
    device = device or next(model.parameters()).device
    outs, nfe, n = [], 0, len(labels)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x0 = sample_noise(cfg.data_shape, start, stop, seed)
        res = solve_ode(model, x0.to(device), labels[start:stop].to(device), **kwargs)
        outs.append(res.x1.float().cpu())
        nfe = max(nfe, res.nfe)
        if progress is not None:
            progress(stop, n)
    x = torch.cat(outs)
    return SampleResult(x.clamp(-1, 1) if cfg.kind == "unet" else x, labels.clone(), nfe)
