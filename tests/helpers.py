"""Config and folder helpers shared by test modules.

Kept out of conftest.py on purpose: pytest imports conftest as ``conftest``, so a test module that
imported ``tests.conftest`` would run its module-level setup (temp home, environment) a second time.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def make_runs_dir(parent: Path, template: Path) -> Path:
    """A fresh runs folder under ``parent`` holding a copy of the migrated MLflow DB."""
    runs = parent / "runs"
    runs.mkdir()
    shutil.copyfile(template, runs / "mlflow.db")
    return runs


def tiny_config_dict(runs: Path, **overrides) -> dict:
    """A toy pipeline that runs in seconds: 8 Gaussians, small MLP, 8 chunks of 128 pairs."""
    cfg = {
        "name": "tiny",
        "runs_dir": str(runs),
        "data": {"dataset": "8gaussians", "n_train": 2000},
        "model": {"kind": "mlp", "data_shape": [2], "hidden": 32, "depth": 2},
        "base": {"steps": 150, "batch_size": 128, "log_every": 25},
        "pairs": {
            "n": 1024,
            "chunk": 128,
            "solver": {"method": "dopri5", "rtol": 1e-4, "atol": 1e-4},
        },
        "reflow": {"rounds": 1, "train": {"steps": 100, "batch_size": 128, "log_every": 25}},
        "evaluate": {"n_samples": 256, "steps": [1, 2], "adaptive": False},
        "tracking": {"model_format": "pickle"},
        "execution": {"devices": ["cpu"], "retry_delay_s": [0.1], "progress_every": 2},
    }
    for dotted, value in overrides.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


SHAPES = ("circle", "square", "triangle")


def write_shape_images(root: Path, per_class: int, size: int = 32, seed: int = 0) -> Path:
    """A class-subfolder image tree (as torchvision's ImageFolder reads it): ``per_class`` PNGs
    of a coloured circle, square or triangle on a plain background, random size and place.

    Returns:
        ``root``, holding ``circle/``, ``square/`` and ``triangle/``.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for name in SHAPES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            bg, fg = (tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(2))
            img = Image.new("RGB", (size, size), bg)
            r = rng.uniform(0.2, 0.4) * size
            cx, cy = rng.uniform(r, size - r, 2)
            box = (cx - r, cy - r, cx + r, cy + r)
            draw = ImageDraw.Draw(img)
            if name == "circle":
                draw.ellipse(box, fill=fg)
            elif name == "square":
                draw.rectangle(box, fill=fg)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
            img.save(root / name / f"{i:04d}.png")
    return root


def write_random_inception_weights(path: Path, seed: int = 0) -> Path:
    """A stand-in for torch-fidelity's Inception-v3 FID weights: the same network and file format
    (a plain state_dict) with RANDOM weights, so FID code runs its real loading path offline.

    Batch-norm statistics are set from one batch of random images so activations stay O(1);
    distances computed with these features are meaningless as image quality.
    """
    import torch
    from torch import nn
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _RandomInit(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the random init
            return None

    path.parent.mkdir(parents=True, exist_ok=True)
    empty = path.with_suffix(".empty")
    torch.save({}, empty)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = _RandomInit("inception-v3-compat", ["2048"], str(empty)).train()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 1.0  # running statistics := this batch's
        with torch.no_grad():
            net(torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8))
    empty.unlink()
    torch.save(net.state_dict(), path)
    return path
