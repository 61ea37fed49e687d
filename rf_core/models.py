"""Velocity networks ``v = model(x, t, y)``: an MLP for 2-D toys and a U-Net for images.

Both share the conditioning recipe: a sinusoidal embedding of ``t`` plus a learned label embedding
with one extra "null" row used for ``y == -1`` (unconditional / classifier-free guidance slot).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rf_core.config import ModelConfig, feature_resolutions


def timestep_embedding(
    t: Tensor, dim: int, max_period: float = 10_000.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Sinusoidal embedding of times in [0, 1].

    Args:
        t: (B,) times.
        dim: embedding width.
        max_period: longest wavelength, in units of ``1000 * t``.
        dtype: dtype of the product ``1000 t f``, its sin/cos and the result. The frequencies
            ``f`` are float32 values whatever ``dtype``, so a float64 model (``model.double()``)
            evaluates the same function as its float32 original, only with less rounding.

    Returns:
        (B, dim) embedding in ``dtype``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    # Scale t by 1000 so [0, 1] spans the same frequency range as integer diffusion steps.
    args = 1000.0 * t.to(dtype)[:, None] * freqs.to(dtype)[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def check_labels(y: Tensor, num_classes: int, name: str = "y") -> None:
    """Raise ValueError unless ``y`` holds labels in ``[-1, num_classes)`` (-1 = unconditional)."""
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"{name} must be an integer tensor, got dtype {y.dtype}")
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo < -1 or hi >= num_classes:
        allowed = "only -1 (unconditional model)" if num_classes == 0 else f"-1..{num_classes - 1}"
        raise ValueError(f"{name} has labels in [{lo}, {hi}]; allowed: {allowed}")


def check_inputs(cfg: ModelConfig, x: Tensor, t: Tensor | None = None, y: Tensor | None = None):
    """Validate a batch against a model config at an API edge.

    Args:
        cfg: the model's config.
        x: (B, *cfg.data_shape) samples.
        t: optional (B,) times in [0, 1].
        y: optional (B,) integer labels in [-1, cfg.num_classes).

    Raises:
        ValueError: naming the argument and what is allowed.
    """
    if x.dim() != len(cfg.data_shape) + 1 or tuple(x.shape[1:]) != cfg.data_shape:
        raise ValueError(
            f"x has shape {tuple(x.shape)}; expected (B, {', '.join(map(str, cfg.data_shape))})"
        )
    b = x.shape[0]
    if t is not None:
        if t.shape != (b,):
            raise ValueError(f"t has shape {tuple(t.shape)}; expected ({b},) matching x")
        if t.numel() and (float(t.min()) < 0.0 or float(t.max()) > 1.0):
            raise ValueError(f"t must lie in [0, 1], got [{float(t.min())}, {float(t.max())}]")
    if y is not None:
        if y.shape != (b,):
            raise ValueError(f"y has shape {tuple(y.shape)}; expected ({b},) matching x")
        check_labels(y, cfg.num_classes)


class Conditioning(nn.Module):
    """Time + label embedding ``MLP(sin(t)) + E[y]``; row ``num_classes`` of E is the null label."""

    def __init__(self, cfg: ModelConfig, out_dim: int):
        super().__init__()
        self.num_classes = cfg.num_classes
        self.time_emb_dim = cfg.time_emb_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(cfg.time_emb_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )
        self.label_emb = nn.Embedding(cfg.num_classes + 1, out_dim)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """(B,), (B,) -> (B, out_dim)."""
        idx = torch.where(y < 0, torch.full_like(y, self.num_classes), y)
        # The embedding in the weights' dtype: float32, or float64 after model.double().
        emb = timestep_embedding(t, self.time_emb_dim, dtype=self.time_mlp[0].weight.dtype)
        return self.time_mlp(emb) + self.label_emb(idx)


def _as_batch(t: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a scalar time (as ODE solvers pass it) to shape (B,)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


class MLPVelocity(nn.Module):
    """MLP velocity field for flat data of shape (B, D)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        (d,) = cfg.data_shape
        self.cond = Conditioning(cfg, cfg.hidden)
        self.inp = nn.Linear(d, cfg.hidden)
        self.layers = nn.ModuleList(nn.Linear(cfg.hidden, cfg.hidden) for _ in range(cfg.depth))
        self.out = nn.Linear(cfg.hidden, d)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, D), (B,) or scalar, (B,) or None -> (B, D)."""
        t = _as_batch(t, x)
        y = torch.full((x.shape[0],), -1, device=x.device) if y is None else y
        h = self.inp(x) + self.cond(t, y)
        for layer in self.layers:
            h = layer(F.silu(h))
        return self.out(F.silu(h))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the conditioning added in between, plus a skip.

    ``dropout`` acts before the second convolution (as in DDPM); at 0 there is no layer at all.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(8, c_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """(B, c_in, H, W), (B, emb_dim) -> (B, c_out, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions (as DDPM++), added to its input.

    The output projection starts at zero, so a freshly built block is the identity.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2)
        a = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])  # (B, HW, C)
        return x + self.proj(a.transpose(-1, -2).reshape(b, c, h, w))


def _attention(channels: int, on: bool) -> nn.Module:
    # nn.Identity has no parameters: a U-Net without attention keeps its state_dict keys.
    return AttnBlock(channels) if on else nn.Identity()


class UNetVelocity(nn.Module):
    """Class-conditional U-Net: ``num_res_blocks`` ResBlocks per level, each level halves H and W.

    With ``channel_mult=(1, 2)`` on 28x28 the resolutions are 28 -> 14 -> 7 (middle block at 7).
    Every down block's output is a skip, taken by one up block of the same level; a block at a
    height in ``attention_resolutions`` is followed by self-attention. The blocks sit in flat
    lists (level by level), so the defaults (one block, no attention, no dropout) have the same
    parameters and state_dict keys as the one-block U-Net that came before these options.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        c_img, n, drop = cfg.data_shape[0], cfg.num_res_blocks, cfg.dropout
        emb_dim = 4 * cfg.base_channels
        self.cond = Conditioning(cfg, emb_dim)
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        heights = feature_resolutions(cfg.data_shape, cfg.patch_size, len(chans))
        attn = {i: heights[i] in cfg.attention_resolutions for i in range(len(heights))}
        self.patch = cfg.patch_size
        c_in = c_img * self.patch**2
        self.conv_in = nn.Conv2d(c_in, chans[0], 3, padding=1)
        self.down, self.down_attn, self.downsample = (
            nn.ModuleList(),
            nn.ModuleList(),
            nn.ModuleList(),
        )
        c = chans[0]
        for level, ch in enumerate(chans):
            for _ in range(n):
                self.down.append(ResBlock(c, ch, emb_dim, drop))
                self.down_attn.append(_attention(ch, attn[level]))
                c = ch
            self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = ResBlock(c, c, emb_dim, drop)
        self.mid_attn = _attention(c, attn[len(chans)])
        self.up, self.up_attn = nn.ModuleList(), nn.ModuleList()
        for level, ch in reversed(list(enumerate(chans))):
            for _ in range(n):
                self.up.append(ResBlock(c + ch, ch, emb_dim, drop))
                self.up_attn.append(_attention(ch, attn[level]))
                c = ch
        self.norm_out = nn.GroupNorm(8, c)
        self.conv_out = nn.Conv2d(c, c_in, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, C, H, W), (B,) or scalar, (B,) or None -> (B, C, H, W)."""
        t = _as_batch(t, x)
        y = torch.full((x.shape[0],), -1, device=x.device) if y is None else y
        emb = self.cond(t, y)
        h = self.conv_in(F.pixel_unshuffle(x, self.patch) if self.patch > 1 else x)
        skips, n = [], self.config.num_res_blocks
        for level, down in enumerate(self.downsample):
            for i in range(level * n, (level + 1) * n):
                h = self.down_attn[i](self.down[i](h, emb))
                skips.append(h)
            h = down(h)
        h = self.mid_attn(self.mid(h, emb))
        for block, attn in zip(self.up, self.up_attn, strict=True):
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:  # nearest upsampling back to the skip's size
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = attn(block(torch.cat([h, skip], dim=1), emb))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out


def build_model(cfg: ModelConfig) -> nn.Module:
    """Build the velocity network described by ``cfg`` (its ``.config`` is ``cfg``)."""
    if cfg.kind == "mlp":
        return MLPVelocity(cfg)
    return UNetVelocity(cfg)
