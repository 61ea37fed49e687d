"""``rectiflow sample`` on an MNIST-5k-shaped U-Net and a 2-D toy MLP: every output kind, the same
bytes for a seed, the labels, shapes and range asked for, guidance. (Bad input: test_cli_errors.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.io import read_image
from typer.testing import CliRunner

from flows.cli import app
from rf_core.config import ModelConfig, TrainConfig
from rf_core.models import build_model
from rf_core.training import save_checkpoint

DIGITS = ModelConfig(
    kind="unet", data_shape=(1, 28, 28), num_classes=10, base_channels=8, channel_mult=(1,)
)
TOY = ModelConfig(kind="mlp", data_shape=(2,), hidden=16, depth=2)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("sample-models")
    torch.manual_seed(0)
    dropout = TrainConfig(steps=1, batch_size=1, label_dropout=0.1)
    digits = save_checkpoint(d / "digits.pt", build_model(DIGITS), dropout, extra={"k": 2})
    toy = save_checkpoint(d / "toy.pt", build_model(TOY), extra={"k": 1})
    return {"digits": str(digits), "toy": str(toy)}


def _sample(*args: str) -> str:
    out = CliRunner().invoke(app, ["sample", *args])
    assert out.exit_code == 0, out.output
    return out.output


def test_npz_holds_the_asked_labels_shapes_and_range_and_repeats_bytes(models, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    printed = _sample(models["digits"], "--per-class", "3", "--seed", "4", "--out", str(a))
    _sample(models["digits"], "--per-class", "3", "--seed", "4", "--out", str(b))
    assert a.read_bytes() == b.read_bytes()
    with np.load(a) as z:
        x, y = z["x"], z["y"]
    assert x.shape == (30, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert y.tolist() == [c for c in range(10) for _ in range(3)]
    assert x.min() >= -1 and x.max() <= 1
    assert "30 samples" in printed and "NFE 1" in printed and str(a) in printed
    with np.load(_out(models["digits"], tmp_path, "--labels", "3,-1", "--n", "5")) as z:
        assert z["y"].tolist() == [3, -1, 3, -1, 3]  # cycled; -1: trained with dropout


def _out(model: str, folder: Path, *args: str, name: str = "s.npz") -> Path:
    path = folder / name
    _sample(model, *args, "--out", str(path), "--overwrite")
    return path


def test_guidance_zero_is_unguided_and_guidance_changes_samples(models, tmp_path):
    plain = _out(models["digits"], tmp_path, "--n", "8", name="plain.npz")
    zero = _out(models["digits"], tmp_path, "--n", "8", "--guidance", "0", name="zero.npz")
    guided = _out(models["digits"], tmp_path, "--n", "8", "--guidance", "3", name="w3.npz")
    assert plain.read_bytes() == zero.read_bytes()
    with np.load(plain) as p, np.load(guided) as g:
        assert np.array_equal(p["y"], g["y"]) and not np.allclose(p["x"], g["x"])
    other_seed = _out(models["digits"], tmp_path, "--n", "8", "--seed", "1", name="s1.npz")
    assert other_seed.read_bytes() != plain.read_bytes()


def test_grid_png_and_folder_of_pngs(models, tmp_path):
    grid = tmp_path / "grid.png"
    _sample(models["digits"], "--n", "20", "--steps", "2", "--out", str(grid))
    first = grid.read_bytes()
    image = read_image(str(grid))
    assert image.shape == (1, 2 * 30 + 2, 10 * 30 + 2)  # 10 columns (a class each), 2 rows
    _sample(models["digits"], "--n", "20", "--steps", "2", "--out", str(grid), "--overwrite")
    assert grid.read_bytes() == first
    folder = tmp_path / "pngs"
    folder.mkdir()
    printed = _sample(models["digits"], "--labels", "7,-1", "--n", "3", "--out", str(folder))
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["000000_class7.png", "000001.png", "000002_class7.png"]
    assert read_image(str(folder / names[0])).shape == (1, 28, 28)
    assert "3 PNGs" in printed
    with np.load(_out(models["digits"], tmp_path, "--labels", "7,-1", "--n", "3")) as z:
        pixels = ((z["x"][0, 0] + 1) / 2 * 255 + 0.5).clip(0, 255).astype(np.uint8)
    assert np.array_equal(read_image(str(folder / names[0]))[0].numpy(), pixels)


def test_toy_model_writes_points_as_npz_and_a_scatter_png(models, tmp_path):
    path = _out(models["toy"], tmp_path, "--n", "300", "--steps", "4", "--batch-size", "128")
    with np.load(path) as z:
        assert z["x"].shape == (300, 2) and (z["y"] == -1).all()
    again = _out(models["toy"], tmp_path, "--n", "300", "--steps", "4", name="again.npz")
    assert again.read_bytes() != b"" and np.allclose(np.load(again)["x"], np.load(path)["x"])
    png = tmp_path / "toy.png"
    _sample(models["toy"], "--n", "300", "--out", str(png))
    one = png.read_bytes()
    _sample(models["toy"], "--n", "300", "--out", str(png), "--overwrite")
    assert png.read_bytes() == one and read_image(str(png)).shape[1:] == (500, 500)


@pytest.fixture(scope="module")
def world(models, tmp_path_factory, mlflow_template) -> dict[str, str]:
    """What the bad inputs point at: a model without label dropout, a file the user keeps."""
    from tests.helpers import make_runs_dir

    d = tmp_path_factory.mktemp("sample-errors")
    torch.manual_seed(0)
    save_checkpoint(d / "plain.pt", build_model(DIGITS), extra={"k": 1})  # no label dropout
    (d / "existing.png").write_bytes(b"a picture the user keeps")
    (d / "folder").mkdir()
    runs = make_runs_dir(d, mlflow_template)
    return {"dir": str(d), "runs": str(runs), **models}


# (command line with {placeholders} from `world`, what the one error line must say)
BAD = [
    ("m-0123 --out {dir}/g.png --runs-dir {runs}", "MODEL: cannot resolve 'm-0123'"),
    ("{dir}/missing.pt --out {dir}/g.png", "MODEL: '{dir}/missing.pt' is neither an MLflow model"),
    ("{dir}/plain.pt --guidance 2 --out {dir}/g.png",
     "guidance: guidance 2 needs a model trained with label dropout; {dir}/plain.pt was trained"),
    ("{dir}/plain.pt --labels -1 --out {dir}/g.png",
     "labels: label -1 (unconditional) needs a model trained with label dropout"),
    ("{toy} --guidance 1 --out {dir}/g.npz", "guidance: guidance 1 needs a class-conditional"),
    ("{digits} --n 0 --out {dir}/g.png", "n: must be a positive number of samples, got 0"),
    ("{digits} --n -4 --out {dir}/g.png", "n: must be a positive number of samples, got -4"),
    ("{digits} --per-class 2 --n 4 --out {dir}/g.png", "per-class: give --per-class alone"),
    ("{digits} --labels 0,10 --out {dir}/g.png",
     "labels: the request has labels in [0, 10]; allowed: -1..9"),
    ("{digits} --labels 1,x --out {dir}/g.png", "labels: '1,x' is not a comma-separated list"),
    ("{digits} --steps 0 --out {dir}/g.png", "steps: must be a positive number of steps"),
    ("{digits} --method rk45 --out {dir}/g.png", "method: solver['method'] must be one of"),
    ("{digits} --out {dir}/nowhere/g.png", "out: folder {dir}/nowhere does not exist"),
    ("{digits} --out {dir}/nowhere", "out: {dir}/nowhere is not a .png or .npz file, nor an"),
    ("{digits} --out {dir}/existing.png",
     "out: {dir}/existing.png exists; pass --overwrite to replace it"),
    ("{toy} --out {dir}/folder", "out: a folder of PNGs needs an image model"),
    ("{digits} --batch-size 0 --out {dir}/g.png", "batch-size: must be a positive number"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "says"), BAD, ids=[b[1].split(":")[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(world, argv, says):
    out = CliRunner().invoke(app, ["sample", *argv.format(**world).split()])
    lines = out.stderr.strip().splitlines()
    assert out.exit_code == 2, out.output
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert says.format(**world) in lines[0] and out.stdout == ""
    d = Path(world["dir"])
    assert (d / "existing.png").read_bytes() == b"a picture the user keeps"
    assert not any((d / name).exists() for name in ("g.png", "g.npz", "nowhere"))
    assert not any((d / "folder").iterdir())
