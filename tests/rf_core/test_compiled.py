"""torch.compile at one batch size: same numbers as eager, one graph for every batch size."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch._dynamo.utils import counters

from rf_core.compiled import BatchCompiled, compile_velocity
from rf_core.config import ModelConfig
from rf_core.models import build_model

TINY_UNET = ModelConfig(
    kind="unet", data_shape=(1, 8, 8), num_classes=3, base_channels=8, channel_mult=(1,)
)


def inputs(n: int, cfg: ModelConfig, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, *cfg.data_shape), generator=g)
    return x, torch.rand(n, generator=g), torch.randint(-1, cfg.num_classes, (n,), generator=g)


@pytest.mark.slow
def test_compiled_unet_matches_eager_at_any_batch_with_one_graph():
    torch.manual_seed(0)
    model = build_model(TINY_UNET).eval()
    torch._dynamo.reset()
    counters.clear()
    compiled = compile_velocity(model, batch_size=8)
    assert compiled.config is TINY_UNET and not model.training
    # Ordinary tensors (a solve's noise at its first stage), made outside inference_mode.
    batches = [inputs(n, TINY_UNET, seed=n) for n in (8, 5, 19, 1)]
    with torch.inference_mode():
        # A full batch, a short one (padded), a long one (sliced).
        for x, t, y in batches:
            assert not x.is_inference()
            torch.testing.assert_close(compiled(x, t, y), model(x, t, y), rtol=1e-4, atol=1e-5)
        # Inference tensors (a solve's later stages) and the solver's stride-0 t.
        x, _, y = inputs(8, TINY_UNET)
        t = torch.tensor(0.3).expand(8)
        assert x.is_inference()
        torch.testing.assert_close(compiled(x, t, y), model(x, t, y), rtol=1e-4, atol=1e-5)
        # Unconditional call (y=None) is the -1 label, as for the eager model.
        torch.testing.assert_close(compiled(x, t), model(x, t), rtol=1e-4, atol=1e-5)
    # Padding, contiguity and inference inputs kept every call on one graph: no recompilation.
    assert counters["stats"]["unique_graphs"] == 1


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        BatchCompiled(build_model(TINY_UNET), 0)


@pytest.mark.slow
def test_missing_compiler_is_a_clear_error(tmp_path):
    # A real toolchain failure: inductor's C++ compiler does not exist (fresh, uncached build).
    code = (
        "import torch\n"
        "from rf_core.compiled import CompileError, compile_velocity\n"
        "from rf_core.models import build_model\n"
        "from tests.rf_core.test_compiled import TINY_UNET, inputs\n"
        "m = compile_velocity(build_model(TINY_UNET), 4)\n"
        "try:\n"
        "    with torch.inference_mode():\n"
        "        m(*inputs(4, TINY_UNET))\n"
        "except CompileError as e:\n"
        "    print('CompileError:', e)\n"
    )
    env = {
        **os.environ,
        "CXX": str(tmp_path / "no-such-c++"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache"),
        "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert "CompileError: torch.compile failed for UNet" in out.stdout, out.stderr[-3000:]
    assert "pairs.solver.compile: false" in out.stdout
