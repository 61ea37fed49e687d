"""Frozen configuration models for the velocity networks and their training.

Both are pydantic models so they validate on construction, round-trip through JSON (checkpoints and
MLflow params store ``model_dump(mode="json")``) and cannot be mutated after a run has started.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)


class Evolving(BaseModel):
    """A frozen config whose later-added fields stay invisible while at their defaults.

    Fields named in ``ADDED`` are left out of ``model_dump`` and ``str``/``repr`` when they hold
    their default value, so a config that does not use them dumps, prints and digests exactly as
    before they existed: stage keys, MLflow params and checkpoints of existing runs stay the same,
    and old dumps (without the fields) validate to equal configs.

    Fields named in ``KEYLESS`` say how or where something runs, never what it computes: they
    stay in ``model_dump`` (MLflow params) but out of ``str`` and :meth:`key_dump`, which is what
    stage and resume keys digest, so changing one reuses the finished stage.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    ADDED: ClassVar[frozenset[str]] = frozenset()
    KEYLESS: ClassVar[frozenset[str]] = frozenset()

    def _at_default(self, name: str) -> bool:
        return getattr(self, name) == type(self).model_fields[name].default

    @model_serializer(mode="wrap")
    def _drop_unused_added(self, handler: Any) -> Any:
        out = handler(self)
        if isinstance(out, dict):
            for name in self.ADDED:
                if name in out and self._at_default(name):
                    del out[name]
        return out

    def key_fields(self) -> list[str]:
        """The fields that decide results: not KEYLESS, and ADDED ones only when set."""
        return [
            name
            for name in type(self).model_fields
            if name not in self.KEYLESS and not (name in self.ADDED and self._at_default(name))
        ]

    def key_dump(self) -> dict:
        """:meth:`key_fields` as JSON (what resume keys digest)."""
        return self.model_dump(mode="json", include=set(self.key_fields()))

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # str(config) is part of stage keys (they digest their inputs with default=str)
        fields = set(self.key_fields())
        for name, value in super().__repr_args__():
            if name in fields:
                yield name, value


def feature_resolutions(data_shape: tuple[int, ...], patch_size: int, levels: int) -> list[int]:
    """Heights of a U-Net's feature maps, level by level, then the middle block's.

    Each level halves the height with a stride-2 convolution (``ceil(h / 2)``), after the input
    is folded into ``patch_size`` patches: (3, 32, 32), patch 1, 4 levels -> [32, 16, 8, 4, 2].
    """
    h = data_shape[1] // patch_size
    out = [h]
    for _ in range(levels):
        h = math.ceil(h / 2)
        out.append(h)
    return out


class ModelConfig(Evolving):
    """Architecture of a velocity field ``v = model(x, t, y)``.

    Attributes:
        kind: ``"mlp"`` for flat vectors (2-D toys), ``"unet"`` for images ``(C, H, W)``.
        data_shape: one sample's shape without the batch dimension, ``(2,)`` or ``(1, 28, 28)``.
        num_classes: number of classes for conditioning; 0 means unconditional (labels must be -1).
        hidden: MLP width.
        depth: number of hidden layers of the MLP.
        base_channels: channels of the first U-Net level.
        channel_mult: per-level channel multipliers of the U-Net; each level after the first halves
            the resolution.
        time_emb_dim: width of the sinusoidal time embedding.
        patch_size: U-Net only: fold ``p x p`` pixel patches into channels first
            (``pixel_unshuffle``), e.g. 2 runs a 28x28 model at 14 -> 7 -> 4, ~5x cheaper on CPU.
        num_res_blocks: U-Net residual blocks per level (each one's output is a skip; the
            up path has as many per level).
        attention_resolutions: feature-map heights at which a self-attention block follows
            each residual block, e.g. ``[16]`` on 32x32 data (see :func:`feature_resolutions`;
            the middle block's height counts too).
        dropout: U-Net dropout rate inside every residual block (0 = none).
    """

    ADDED: ClassVar[frozenset[str]] = frozenset(
        {"num_res_blocks", "attention_resolutions", "dropout"}
    )

    kind: Literal["mlp", "unet"]
    data_shape: tuple[int, ...]
    num_classes: int = Field(0, ge=0)
    hidden: int = Field(128, gt=0)
    depth: int = Field(3, gt=0)
    base_channels: int = Field(32, gt=0)
    channel_mult: tuple[int, ...] = (1, 2)
    time_emb_dim: int = Field(64, gt=0)
    patch_size: int = Field(1, gt=0)
    num_res_blocks: int = Field(1, gt=0)
    attention_resolutions: tuple[int, ...] = ()
    dropout: float = Field(0.0, ge=0, lt=1)

    @field_validator("attention_resolutions")
    @classmethod
    def _has_resolutions(cls, v: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        d = info.data
        if not v or d.get("kind") != "unet" or len(d.get("data_shape") or ()) != 3:
            return v  # the other checks below report a wrong kind or shape
        if not d.get("channel_mult") or d["data_shape"][1] % d.get("patch_size", 1):
            return v
        have = feature_resolutions(d["data_shape"], d["patch_size"], len(d["channel_mult"]))
        if missing := sorted(set(v) - set(have)):
            raise ValueError(
                f"model.attention_resolutions {list(v)}: the U-Net has no feature map of height "
                f"{', '.join(map(str, missing))}; its heights are {have} for data_shape "
                f"{list(d['data_shape'])}, patch_size {d['patch_size']} and "
                f"{len(d['channel_mult'])} levels"
            )
        return v

    @model_validator(mode="after")
    def _check_shape(self) -> ModelConfig:
        if not self.data_shape or any(d <= 0 for d in self.data_shape):
            raise ValueError(f"data_shape must be non-empty positive ints, got {self.data_shape}")
        if self.kind == "mlp" and len(self.data_shape) != 1:
            raise ValueError(f"kind='mlp' needs data_shape=(D,), got {self.data_shape}")
        if self.kind == "mlp" and (
            set_ := sorted(n for n in self.ADDED if not self._at_default(n))
        ):
            raise ValueError(f"{', '.join(set_)}: U-Net settings, not used by kind='mlp'")
        if self.kind == "unet":
            if len(self.data_shape) != 3:
                raise ValueError(f"kind='unet' needs data_shape=(C, H, W), got {self.data_shape}")
            if not self.channel_mult or any(m <= 0 for m in self.channel_mult):
                raise ValueError(f"channel_mult must be positive ints, got {self.channel_mult}")
            _, h, w = self.data_shape
            if h % self.patch_size or w % self.patch_size:
                raise ValueError(
                    f"data_shape {self.data_shape}: H and W must be divisible by "
                    f"patch_size={self.patch_size}"
                )
            if self.base_channels % 8:
                raise ValueError(
                    f"base_channels must be a multiple of 8 (GroupNorm), got {self.base_channels}"
                )
        return self


class TrainConfig(Evolving):
    """Optimisation settings of :func:`rf_core.training.fit`.

    Attributes:
        steps: number of optimizer steps.
        batch_size: samples per optimizer step, over all processes and micro-steps together (the
            effective batch). Each process takes ``batch_size / (processes * accumulation)`` per
            micro-step; the number of processes is where the run is, not part of the recipe.
        lr: AdamW peak learning rate.
        weight_decay: AdamW weight decay.
        ema_decay: decay of the exponential moving average of the weights; 0 disables EMA.
        t_sampler: distribution of training times, see :mod:`rf_core.timesteps`.
        loss: ``"mse"`` or ``"pseudo_huber"`` (RF++), see :mod:`rf_core.losses`.
        grad_clip: max global grad norm, ``None`` for no clipping.
        seed: seeds parameter init (when fit builds nothing, only t sampling) and time sampling.
        log_every: call the callback every this many steps.
        checkpoint_every: write a training state (everything a resume needs) every this many
            steps; a killed run continues from the newest one.
        keep_last: training states kept on disk (older ones are deleted as new ones are written).
        precision: ``fp32``, or ``bf16`` autocast (weights, optimizer and EMA stay fp32).
        compile: run the training forward under ``torch.compile``.
        lr_schedule: after the warmup, ``constant`` or ``cosine`` decay to 0 at the last step.
        warmup_steps: linear learning-rate warmup from 0 over this many steps.
        accumulation: micro-steps (gradient accumulation) per optimizer step; must divide
            ``batch_size`` (times the number of processes).
        ema_warmup: EMA decay ``min(ema_decay, (1 + n) / (10 + n))`` at update n, so the average
            forgets the random initialisation quickly.
        label_dropout: probability of training a sample with the null label (-1) instead of its
            class, so the model also learns ``v(x, t, null)``: what classifier-free guidance and
            unconditional sampling of a class-conditional model need. 0 (default) trains as
            before, bit for bit; 0.1 is the usual choice.
    """

    # Settings added after the first TrainConfig; at their defaults they reproduce its behaviour.
    ADDED: ClassVar[frozenset[str]] = frozenset(
        {"precision", "lr_schedule", "warmup_steps", "accumulation", "ema_warmup", "label_dropout"}
    )
    # When states are written and how a step is computed (compiled kernels round differently,
    # ~1e-6), never the recipe.
    KEYLESS: ClassVar[frozenset[str]] = frozenset({"checkpoint_every", "keep_last", "compile"})

    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    t_sampler: Literal["uniform", "logit_normal", "u_shaped", "zero"] = "uniform"
    loss: Literal["mse", "pseudo_huber"] = "mse"
    grad_clip: float | None = Field(1.0, gt=0)
    seed: int = 0
    log_every: int = Field(50, gt=0)
    checkpoint_every: int = Field(1000, gt=0)
    keep_last: int = Field(3, gt=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    accumulation: int = Field(1, gt=0)
    ema_warmup: bool = False
    label_dropout: float = Field(0.0, ge=0, lt=1)

    @field_validator("accumulation")
    @classmethod
    def _divides(cls, v: int, info: ValidationInfo) -> int:
        batch = info.data.get("batch_size")
        if batch is not None and batch % v:
            raise ValueError(
                f"accumulation {v} does not divide batch_size {batch}: each micro-step takes "
                "batch_size / accumulation samples"
            )
        return v

    @field_validator("warmup_steps")
    @classmethod
    def _shorter(cls, v: int, info: ValidationInfo) -> int:
        steps = info.data.get("steps")
        if steps is not None and v >= steps:
            raise ValueError(f"warmup_steps ({v}) must be smaller than steps ({steps})")
        return v

    def micro_batch(self, processes: int = 1) -> int:
        """Samples per process and micro-step; ValueError when they do not divide evenly."""
        share = processes * self.accumulation
        if self.batch_size % share:
            raise ValueError(
                f"batch_size {self.batch_size} does not split into {processes} processes x "
                f"{self.accumulation} micro-steps (accumulation): make it a multiple of {share}"
            )
        return self.batch_size // share


class ClassifierRecipe(BaseModel):
    """How the classifier is built and trained (part of its cache and registry key).

    Attributes:
        width: channels of the first block; the second and third have 2× and 4×.
        feature_dim: width of the penultimate layer returned by ``features``.
        steps: optimizer steps (1,200 × 128 ≈ 38 epochs of MNIST-5k's 4,000 images).
        batch_size: images per step.
        lr: peak AdamW learning rate of the one-cycle schedule.
        weight_decay: AdamW weight decay.
        label_smoothing: cross-entropy label smoothing.
        augment: apply random affine + elastic deformations to every training batch.
        seed: seeds initialisation, batch order and augmentation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(16, gt=0)
    feature_dim: int = Field(128, gt=0)
    steps: int = Field(1200, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    augment: bool = True
    seed: int = 0
