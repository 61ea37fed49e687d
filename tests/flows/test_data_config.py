"""``data:`` settings of on-disk sets, the metric choice, and the checks made before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flows.config import load_config
from flows.data_config import eval_metric
from flows.inputs import base_inputs, check_inception
from flows.stage import stage_key
from rf_core.frechet import INCEPTION_ENV, INCEPTION_URL
from tests.helpers import tiny_config_dict, write_shape_images

ROOT = Path(__file__).resolve().parents[2]


def _folder_cfg(runs: Path, path: Path, **overrides) -> dict:
    model = {"kind": "unet", "data_shape": [3, 32, 32], "num_classes": 3, "base_channels": 8}
    return tiny_config_dict(
        runs, **{"data": {"dataset": "folder", "path": str(path)}, "model": model, **overrides}
    )


# The make-run default before the full-resolution recipe (its 1-RF key was computed then).
PATCH2_DEFAULT = {
    "name": "mnist5k",
    "data": {"dataset": "mnist5k"},
    "model": {
        "kind": "unet", "data_shape": [1, 28, 28], "num_classes": 10, "base_channels": 16,
        "channel_mult": [1, 2], "patch_size": 2,
    },
    "base": {"steps": 2500, "batch_size": 128, "lr": 0.002, "ema_decay": 0.999, "log_every": 50},
    "pairs": {"n": 4096, "chunk": 512, "solver": {"method": "rk4", "steps": 14}},
    "reflow": {"rounds": 1, "train": {"steps": 500, "batch_size": 128, "ema_decay": 0.0}},
}  # fmt: skip


def test_stage_keys_of_existing_configs_are_unchanged(tmp_path):
    # Values computed by the code before on-disk sets and the new U-Net options existed.
    for cfg, key in [
        (load_config(PATCH2_DEFAULT), "1b3e432c18953642"),
        (load_config(tiny_config_dict(tmp_path)), "ab09d188606d31ab"),
        (load_config(ROOT / "configs" / "toy2d.yaml"), "eaab02db26091b54"),
    ]:
        assert stage_key("train_base", cfg.data, cfg.model, cfg.base, cfg.seed) == key
        dumped = cfg.model_dump(mode="json")
        assert not {"path", "flip", "workers", "values"} & set(dumped["data"])
        assert not {"metric", "inception_weights"} & set(dumped["evaluate"])
        assert "num_res_blocks" not in dumped["model"]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"dataset": "folder"}, "data: Value error, path: dataset 'folder' needs a path"),
        ({"dataset": "mnist5k", "path": "/x"}, "path: dataset 'mnist5k' takes no path"),
        ({"dataset": "folder", "path": "/x", "values": "latents"}, "values: 'latents' needs"),
        ({"dataset": "npz", "path": "/x", "scale": 0.2}, "scale, shift: set them for latents"),
        ({"dataset": "8gaussians", "flip": True}, "flip: 2-D toys are no images"),
        ({"dataset": "folder", "path": "/x", "workers": -1}, "data.workers"),
    ],
)
def test_bad_data_settings_name_the_field(tmp_path, data, match):
    cfg = tiny_config_dict(tmp_path)
    if data["dataset"] != "8gaussians":
        cfg["model"] = {
            "kind": "unet",
            "data_shape": [1, 28, 28] if data["dataset"] == "mnist5k" else [3, 8, 8],
        }
    cfg["data"] = data
    with pytest.raises(ValueError, match=match):
        load_config(cfg)


def test_the_metric_follows_the_data_unless_set(tmp_path):
    assert eval_metric(*_sections(load_config(ROOT / "configs" / "mnist5k.yaml"))) == "classifier"
    assert eval_metric(*_sections(load_config(ROOT / "configs" / "cifar10.yaml"))) == "inception"
    assert eval_metric(*_sections(load_config(tiny_config_dict(tmp_path)))) == "toy"
    folder = load_config(_folder_cfg(tmp_path, tmp_path))
    assert eval_metric(*_sections(folder)) == "inception"
    latents = _folder_cfg(tmp_path, tmp_path / "z.npz")
    latents["data"] = {"dataset": "npz", "path": str(tmp_path / "z.npz"), "values": "latents"}
    assert eval_metric(*_sections(load_config(latents))) == "none"
    with pytest.raises(ValueError, match=r"evaluate.metric: inception scores images, not latents"):
        load_config({**latents, "evaluate": {"metric": "inception"}})
    with pytest.raises(ValueError, match="classifier scores digits"):
        load_config({**_folder_cfg(tmp_path, tmp_path), "evaluate": {"metric": "classifier"}})
    with pytest.raises(ValueError, match="2-D toys are scored by sliced Wasserstein"):
        load_config(tiny_config_dict(tmp_path, **{"evaluate.metric": "none"}))


def _sections(cfg):
    return cfg.data, cfg.evaluate


def test_model_settings_that_the_data_cannot_have_name_the_model_field(tmp_path):
    cfg = _folder_cfg(tmp_path, tmp_path)
    cfg["model"] = {**cfg["model"], "data_shape": [4, 32, 32]}
    with pytest.raises(ValueError, match=r"model.data_shape: an image folder gives 1"):
        load_config(cfg)
    cfg["model"] = {**cfg["model"], "data_shape": [3, 32, 32], "attention_resolutions": [64]}
    with pytest.raises(ValueError, match=r"model.attention_resolutions: .*height 64"):
        load_config(cfg)


def test_data_identity_checks_the_files_against_the_model_and_follows_them(tmp_path):
    folder = write_shape_images(tmp_path / "shapes", per_class=2)
    cfg = load_config(_folder_cfg(tmp_path, folder))
    ident = base_inputs(cfg)
    assert ident.classes == ("circle", "square", "triangle") and ident.n == 6
    Image.new("RGB", (32, 32), (9, 9, 9)).save(folder / "square" / "0000.png")
    assert base_inputs(cfg).digest != ident.digest  # a changed file: a new train_base key
    four = load_config(_folder_cfg(tmp_path, folder, **{"model.num_classes": 4}))
    with pytest.raises(ValueError, match=r"model.num_classes is 4 but .* has 3 classes \(circle"):
        base_inputs(four)
    assert base_inputs(load_config(_folder_cfg(tmp_path, folder, **{"model.num_classes": 0})))
    (folder / "circle" / "0001.png").write_bytes(b"garbage")  # unreadable, found when training
    missing = load_config(_folder_cfg(tmp_path, tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"data.path: image folder .*nowhere does not exist"):
        base_inputs(missing)
    assert base_inputs(load_config(tiny_config_dict(tmp_path))) is None  # toys: nothing to read


def test_npz_of_the_wrong_shape_fails_naming_the_file_and_field(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros((4, 3, 16, 16), np.uint8), y=np.arange(4) % 3)
    cfg = _folder_cfg(tmp_path, path)
    cfg["data"] = {"dataset": "npz", "path": str(path)}
    with pytest.raises(ValueError, match=rf"data.path: npz file {path}: array 'x' has shape"):
        base_inputs(load_config(cfg))


def test_missing_inception_weights_name_the_setting_and_the_download(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = tmp_path / "w.pth"
    cfg = load_config(
        _folder_cfg(tmp_path, tmp_path, **{"evaluate.inception_weights": str(weights)})
    )
    with pytest.raises(ValueError, match=r"evaluate.inception_weights: Inception FID weights") as e:
        check_inception(cfg)
    assert INCEPTION_URL in str(e.value) and str(weights) in str(e.value)
    torch.save({}, weights)  # found (what it holds is checked when it is loaded)
    check_inception(cfg)
    check_inception(load_config(ROOT / "configs" / "mnist5k.yaml"))  # classifier: not needed
