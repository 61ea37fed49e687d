"""Frozen configuration models for the velocity networks and their training.

Both are pydantic models so they validate on construction, round-trip through JSON (checkpoints and
MLflow params store ``model_dump(mode="json")``) and cannot be mutated after a run has started.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelConfig(BaseModel):
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
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["mlp", "unet"]
    data_shape: tuple[int, ...]
    num_classes: int = Field(0, ge=0)
    hidden: int = Field(128, gt=0)
    depth: int = Field(3, gt=0)
    base_channels: int = Field(32, gt=0)
    channel_mult: tuple[int, ...] = (1, 2)
    time_emb_dim: int = Field(64, gt=0)
    patch_size: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _check_shape(self) -> ModelConfig:
        if not self.data_shape or any(d <= 0 for d in self.data_shape):
            raise ValueError(f"data_shape must be non-empty positive ints, got {self.data_shape}")
        if self.kind == "mlp" and len(self.data_shape) != 1:
            raise ValueError(f"kind='mlp' needs data_shape=(D,), got {self.data_shape}")
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


class TrainConfig(BaseModel):
    """Optimisation settings of :func:`rf_core.training.fit`.

    Attributes:
        steps: number of optimizer steps.
        batch_size: samples per step (used by couplings that draw batches).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        ema_decay: decay of the exponential moving average of the weights; 0 disables EMA.
        t_sampler: distribution of training times, see :mod:`rf_core.timesteps`.
        loss: ``"mse"`` or ``"pseudo_huber"`` (RF++), see :mod:`rf_core.losses`.
        grad_clip: max global grad norm, ``None`` for no clipping.
        seed: seeds parameter init (when fit builds nothing, only t sampling) and time sampling.
        log_every: call the callback every this many steps.
        label_dropout: probability of training a sample with the null label (-1) instead of its
            class, so the model also learns ``v(x, t, null)``: what classifier-free guidance and
            unconditional sampling of a class-conditional model need. 0 (default) trains as
            before, bit for bit; 0.1 is the usual choice.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

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
    label_dropout: float = Field(0.0, ge=0, lt=1)


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
