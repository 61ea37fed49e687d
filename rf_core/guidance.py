"""Classifier-free guidance: label dropout in training, the guided velocity, and when it applies.

A class-conditional model learns the unconditional field ``v(x, t, null)`` only if it is trained
with the null label now and then (``TrainConfig.label_dropout``). Sampling then mixes the two
fields, ``v = (1 + w) v(x, t, y) - w v(x, t, null)``: ``w = 0`` is plain conditional sampling,
larger ``w`` pushes samples towards their class. Guidance, and unconditional samples (label -1)
of a class-conditional model, are refused on a model whose null label was never trained: its
null-label embedding is still the random initialisation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from numbers import Real

import torch
from torch import Tensor, nn

from rf_core.models import check_labels

HOW_TO_TRAIN = "train it with train.label_dropout > 0 (e.g. 0.1)"


def drop_labels(y: Tensor, p: float, seed: int, step: int, rank: int = 0, world: int = 1) -> Tensor:
    """Label dropout: each label of ``y`` becomes the null label -1 with probability ``p``.

    The mask of a step comes from a CPU generator seeded by ``(seed, step)`` only, so it is the
    same on every device and in a resumed run, and every other random stream of the training is
    left untouched. Under data-parallel training the mask is drawn for the global batch of
    ``B * world`` labels and process ``rank`` keeps its rows, so the dropped samples of a step do
    not depend on the number of processes.

    Args:
        y: (B,) int64 labels.
        p: dropout probability in [0, 1).
        seed: the training seed.
        step: the optimizer step the batch is for.
        rank, world: this process and the number of data-parallel processes.

    Returns:
        (B,) labels, -1 where dropped.
    """
    digest = hashlib.sha256(f"label-dropout/{seed}/{step}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    b = y.shape[0]
    drop = (torch.rand(b * world, generator=gen) < p)[rank * b : (rank + 1) * b]
    return torch.where(drop.to(y.device), torch.full_like(y, -1), y)


def with_label_dropout(
    get_batch: Callable[[int], tuple], p: float, seed: int, rank: int = 0, world: int = 1
) -> Callable:
    """``step -> (x0, x1, y)`` with :func:`drop_labels` applied to each batch's labels."""

    def get(step: int) -> tuple[Tensor, Tensor, Tensor]:
        x0, x1, y = get_batch(step)
        return x0, x1, drop_labels(y, p, seed, step, rank, world)

    return get


def label_dropout_of(payload: dict) -> float:
    """The ``train.label_dropout`` a checkpoint's model was trained with: 0 for checkpoints
    written before the setting existed or without a train config."""
    return float((payload.get("train_config") or {}).get("label_dropout", 0.0))


def is_scale(guidance: object) -> bool:
    """True for a guidance scale: a finite real number >= 0 (not a bool)."""
    return (
        isinstance(guidance, Real)
        and not isinstance(guidance, bool)
        and math.isfinite(guidance)
        and guidance >= 0
    )


def scale_label(guidance: float) -> str:
    """How a guidance scale is named in labels and metric keys: "w2", "w0.5"."""
    return f"w{guidance:g}"


def check_scale(guidance: float) -> None:
    """Raise ValueError unless ``guidance`` is a finite number >= 0."""
    if not is_scale(guidance):
        raise ValueError(f"guidance must be a finite number >= 0, got {guidance}")


def check_guidance(
    num_classes: int, label_dropout: float, y: Tensor, guidance: float, model: str = "the model"
) -> None:
    """Raise ValueError unless ``model`` can be sampled at labels ``y`` with ``guidance``.

    Args:
        num_classes: the model's classes (0: unconditional, labels must be -1).
        label_dropout: the ``train.label_dropout`` it was trained with.
        y: (N,) labels asked for, -1 = unconditional.
        guidance: guidance scale ``w`` (>= 0).
        model: how to name the model in the message (a model id, URI or checkpoint path).

    Raises:
        ValueError: a label out of range, a negative or non-finite ``w``, guidance of an
            unconditional model, or guidance / label -1 on a model trained without dropout.
    """
    check_labels(y, num_classes, name="the request")
    check_scale(guidance)
    if num_classes == 0:
        if guidance:
            raise ValueError(
                f"guidance {guidance:g} needs a class-conditional model; {model} is "
                "unconditional (num_classes 0): use guidance 0"
            )
        return
    if label_dropout > 0:
        return
    if guidance:
        raise ValueError(
            f"guidance {guidance:g} needs a model trained with label dropout; {model} was "
            f"trained without it (train.label_dropout 0): use guidance 0, or {HOW_TO_TRAIN}"
        )
    if y.numel() and int(y.min()) < 0:
        raise ValueError(
            f"label -1 (unconditional) needs a model trained with label dropout; {model} was "
            f"trained without it (train.label_dropout 0): give labels 0..{num_classes - 1}, or "
            f"{HOW_TO_TRAIN}"
        )


class GuidedVelocity(nn.Module):
    """Classifier-free guidance of a velocity model: ``(1 + w) v(x, t, y) - w v(x, t, null)``.

    Each call evaluates the wrapped model twice (with ``y``, then with the null label -1), except
    at ``w == 0``, where it is the wrapped model itself: one evaluation, the same numbers bit for
    bit. Wrap an :class:`rf_core.solvers.NFECounter` to count both evaluations.
    """

    def __init__(self, model: nn.Module, w: float):
        super().__init__()
        self.model, self.w = model, float(w)

    @property
    def config(self):
        """The wrapped model's ModelConfig."""
        return self.model.config

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, *shape), (B,), (B,) or None -> (B, *shape)."""
        cond = self.model(x, t, y)
        if self.w == 0:
            return cond
        null = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        return (1 + self.w) * cond - self.w * self.model(x, t, null)
