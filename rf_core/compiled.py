"""A velocity model compiled for inference at one batch size (pair generation's ``compile``).

Why: on CPU, Inductor fuses the U-Net's GroupNorm/SiLU/add chains and, with frozen weights,
pre-packs the convolutions; measured 1.35-1.56x the eager forward images/s of the MNIST U-Net
at batch 256 on 2 cores (BENCHMARKS.md, "Pair generation"). A compiled graph is specialised to
its input shapes, and a new batch size recompiles (tens of seconds on CPU), so every call is
padded up to the one batch size the model was compiled for: a chunk's short last batch costs a
padded forward, not a recompilation. Samples never interact in these models (per-sample
GroupNorm, convolutions, embeddings), so the padding rows change nothing but the work done.

The compiled model rounds differently from the eager one (~1e-6 relative), which is why a pair
store records ``compile`` in its solver dict: resume and repair then use the same execution.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CompileError(RuntimeError):
    """torch.compile could not build the model (no C++ compiler on CPU, no Triton on GPU, ...)."""


class BatchCompiled(nn.Module):
    """``model`` under ``torch.compile`` (weights frozen), always called at ``batch_size`` rows.

    ``BatchCompiled(model, b)(x, t, y) == model(x, t, y)`` up to float rounding, for any
    ``len(x) <= b``; larger batches are run in slices of ``b``. Inference only: the weights are
    folded into the compiled graph when it is first called, so later weight updates are not seen.
    """

    def __init__(self, model: nn.Module, batch_size: int):
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        self.model, self.batch_size = model, int(batch_size)
        # dynamic=False: one static graph (the padded shape); freezing: weights as constants.
        self.compiled = torch.compile(model, dynamic=False, options={"freezing": True})

    @property
    def config(self):
        """The wrapped model's ModelConfig."""
        return self.model.config

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """(B, *shape), (B,), (B,) -> (B, *shape), computed in padded slices of ``batch_size``."""
        if y is None:
            y = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        b = self.batch_size
        parts = zip(x.split(b), t.split(b), y.split(b), strict=True)  # t, y: one per row of x
        outs = [self._call(*args) for args in parts]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _call(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        # Contiguous inputs: a compiled graph also guards on strides (the solver's t is an
        # expanded, stride-0 view), and a guard miss means a recompilation.
        x, t, y = x.contiguous(), t.contiguous(), y.contiguous()
        if torch.is_inference_mode_enabled():
            # It guards on inference tensors too: a solve passes the (ordinary) noise at its
            # first stage and inference tensors after it. One kind of input, one graph.
            x, t, y = (a if a.is_inference() else a.clone() for a in (x, t, y))
        m, pad = x.shape[0], self.batch_size - x.shape[0]
        if pad:  # zero rows with the last row's label (a valid one) keep the compiled shape
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
            t, y = torch.cat([t, t.new_zeros(pad)]), torch.cat([y, y[-1:].expand(pad)])
        try:
            out = self.compiled(x, t, y)
        except Exception as e:  # dynamo/inductor wrap toolchain failures in their own types
            if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
                raise
            raise CompileError(
                f"torch.compile failed for {type(self.model).__name__} "
                f"({type(e).__name__}: {str(e).splitlines()[0][:200]}). It needs a C++ compiler "
                "on CPU (gcc/clang) or Triton on GPU; set the pair solver's compile to false "
                "(pairs.solver.compile: false) to generate without it."
            ) from e
        return out[:m] if pad else out


def compile_velocity(model: nn.Module, batch_size: int) -> BatchCompiled:
    """``model`` in eval mode, compiled for inference at ``batch_size`` (:class:`BatchCompiled`)."""
    return BatchCompiled(model.eval(), batch_size)
