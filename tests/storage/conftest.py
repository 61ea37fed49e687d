"""Fixtures of the storage tests: tiny real checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.storage.storekit import tiny_model

# The machine is shared and the models are tiny: extra intra-op threads only spin.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    """A real checkpoint file of :func:`tiny_model` (seed 0)."""
    from rf_core.training import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, tiny_model(0), extra={"k": 1})
    return path


@pytest.fixture(scope="session")
def other_ckpt(tmp_path_factory) -> Path:
    """Same architecture, different weights."""
    from rf_core.training import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt2") / "other.pt"
    save_checkpoint(path, tiny_model(1), extra={"k": 1})
    return path
