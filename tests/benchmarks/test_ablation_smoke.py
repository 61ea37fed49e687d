"""Smoke run of the RF++ ablation on a tiny 2-D toy "pipeline run" (real stores, real training)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from benchmarks.ablation import main
from benchmarks.ablation_steps import (
    SEED_RECIPE_SOLVER,
    claim,
    load_pipeline_config,
    locate,
    nfe_per_pair,
)
from rf_core.config import ModelConfig
from rf_core.models import build_model
from rf_core.training import checkpoint_sha256, save_checkpoint
from storage.generate import generate_chunks
from storage.pairstore import PairStore

CONFIG = {
    "name": "tiny",
    "data": {"dataset": "8gaussians", "n_train": 256},
    "model": {"kind": "mlp", "data_shape": [2], "hidden": 16, "depth": 1},
    "base": {"steps": 2, "batch_size": 16},
    "pairs": {"n": 64, "chunk": 32, "solver": {"method": "euler", "steps": 2}},
    "reflow": {"train": {"steps": 3, "batch_size": 16, "t_sampler": "u_shaped", "log_every": 1}},
    "evaluate": {"n_samples": 32, "steps": [1, 2], "adaptive": False},
}


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, Path]:
    """A fake finished pipeline run: 1-RF checkpoint and its finished default pair store."""
    runs = tmp_path / "runs"
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({**CONFIG, "runs_dir": str(runs)}))
    torch.manual_seed(0)
    model = build_model(ModelConfig(**CONFIG["model"]))
    ckpt = save_checkpoint(runs / "checkpoints" / "tiny-1rf-r1.pt", model, extra={"k": 1})
    source = {"checkpoint_sha256": checkpoint_sha256(ckpt), "k": 1}
    store = PairStore.create(
        str(runs / "stores" / "tiny-1rf-a.zarr"), n=64, chunk=32, sample_shape=(2,), seed=0,
        source=source, solver={"method": "euler", "steps": 2}, dataset="8gaussians",
        num_classes=0,
    )  # fmt: skip
    generate_chunks(model, store)
    store.finalize()
    return cfg_path, tmp_path


@pytest.mark.slow  # eleven tiny trainings and scorings: ~20 s idle, minutes on a loaded machine
def test_ablation_runs_every_lever_and_writes_its_section(run):
    cfg_path, tmp = run
    md = tmp / "BENCH.md"
    md.write_text("# b\n\n<!-- other:start -->\nkeep me\n<!-- other:end -->\n")
    out = tmp / "abl"
    argv = ["--config", str(cfg_path), "--out", str(out), "--write", "--bench-md", str(md)]
    results = main(argv)
    names = [r["variant"] for r in results]
    assert names[:3] == ["baseline", "seed-pairs", "seed1"] and len(names) == 10
    by = {r["variant"]: r for r in results}
    base = by["baseline"]
    assert base["origin"] == "trained here" and base["init_from_1rf"] is True
    # each lever row differs from the baseline in exactly the one setting it names
    for name, key, value in [("t-uniform", "t_sampler", "uniform"), ("seed1", "seed", 1),
                             ("loss-pseudo_huber", "loss", "pseudo_huber"),
                             ("ema-0", "ema_decay", 0.0),
                             ("lr-cosine", "lr_schedule", "cosine")]:  # fmt: skip
        row = by[name]["train"]  # settings added later are dumped only off their defaults
        diff = {k for k in {*base["train"], *row} if row.get(k) != base["train"].get(k)}
        assert diff == {key} and by[name]["train"][key] == value
    assert by["init-toggled"]["init_from_1rf"] is False
    assert by["init-toggled"]["train"] == base["train"]
    # the seed-recipe store: the seed's solver on the same noise and labels
    seed_store = PairStore.open(by["seed-pairs"]["store"])
    default = PairStore.open(base["store"])
    assert {k: seed_store.attrs["solver"][k] for k in SEED_RECIPE_SOLVER} == SEED_RECIPE_SOLVER
    x0s, x1s, ys = seed_store.read_chunk(1)
    x0d, x1d, yd = default.read_chunk(1)
    assert np.array_equal(x0s, x0d) and np.array_equal(ys, yd) and not np.array_equal(x1s, x1d)
    # twice the pairs: same solver and seed, so its first chunks are the default pairs
    double = PairStore.open(by["pairs-x2"]["store"])
    assert double.n == 128 and double.solver == default.solver
    pairs = zip(double.read_chunk(1), default.read_chunk(1), strict=True)
    assert all(np.array_equal(a, b) for a, b in pairs)
    assert by["pairs-x2"]["nfe_per_pair"] == nfe_per_pair(default) == 2
    half = PairStore.open(by["pairs-half"]["store"])  # the default's first chunk, copied
    assert half.n == by["pairs-half"]["store_n"] == 32 and half.is_finalized
    first = zip(half.read_chunk(0), default.read_chunk(0), strict=True)
    assert all(np.array_equal(a, b) for a, b in first)
    for r in results:
        assert set(r["metrics"]) >= {"swd/euler_1", "swd/euler_2", "straightness"}
    text = md.read_text()
    assert "keep me" in text and text.count("<!-- ablation:start -->") == 1
    section = text.split("<!-- ablation:start -->")[1].split("<!-- ablation:end -->")[0]
    assert all(f"| {n} |" in section for n in names) and "| 1-RF (reference) |" in section
    assert "Pair-quality check" in section and "Run-to-run noise" in section
    # a second call reuses every cached result: nothing retrained, same numbers
    stamps = {p: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}
    assert main(argv[:4]) == results
    assert stamps == {p: p.stat().st_mtime_ns for p in (out / "results").glob("*.json")}


def test_baseline_reuses_the_pipeline_2rf_and_scores_it_identically(run):
    cfg_path, tmp = run
    first = main(["--config", str(cfg_path), "--out", str(tmp / "a"), "--variants", "baseline"])
    # put the trained baseline where the pipeline leaves its 2-RF
    runs = tmp / "runs" / "checkpoints"
    shutil.copy(first[0]["checkpoint"], runs / "tiny-2rf-r2.pt")
    again = main(["--config", str(cfg_path), "--out", str(tmp / "b"), "--variants", "baseline"])
    assert again[0]["origin"] == "pipeline checkpoint" and again[0]["train_s"] is None
    assert again[0]["metrics"] == first[0]["metrics"]  # same model, same evaluation


def test_clear_errors(run):
    cfg_path, tmp = run
    with pytest.raises(SystemExit, match="--variants: unknown nope"):
        main(["--config", str(cfg_path), "--out", str(tmp / "x"), "--variants", "nope"])
    for p in (tmp / "runs" / "checkpoints").glob("*.pt"):
        p.unlink()
    with pytest.raises(ValueError, match=r"need exactly one 1-RF checkpoint.*--base-ckpt"):
        locate(load_pipeline_config(str(cfg_path), None))
    with pytest.raises(ValueError, match=r"--base-ckpt: .*missing\.pt does not exist"):
        locate(load_pipeline_config(str(cfg_path), None), base_ckpt=str(tmp / "missing.pt"))


def test_a_variant_runs_in_one_process_only(tmp_path):
    lock = tmp_path / "results" / "v.running"
    assert claim(lock) and lock.read_text() == str(os.getpid())
    assert claim(lock)  # our own lock
    lock.write_text(str(os.getppid()))  # a live other process holds it
    assert not claim(lock)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(str(dead.pid))  # stale: its process is gone
    assert claim(lock) and lock.read_text() == str(os.getpid())


def test_a_call_whose_every_row_is_another_process_s_writes_nothing(run):
    cfg_path, tmp = run
    out, md = tmp / "abl", tmp / "BENCH.md"
    md.write_text("# b\n")
    lock = out / "results" / "t-uniform.running"
    lock.parent.mkdir(parents=True)
    lock.write_text(str(os.getppid()))  # a live other process is running that row
    argv = ["--config", str(cfg_path), "--out", str(out), "--variants", "t-uniform", "--write"]
    argv += ["--bench-md", str(md)]
    assert main(argv) == []
    assert md.read_text() == "# b\n" and lock.is_file()  # no table, the other's lock kept
    assert not (out / "results" / "t-uniform.json").exists()


def test_without_ema_both_a_short_and_a_long_memory_are_rows():
    from benchmarks.ablation import variants
    from rf_core.config import TrainConfig

    rows = {
        v.name: v for v in variants(TrainConfig(steps=8, batch_size=4, ema_decay=0.0), 64, True)
    }
    assert rows["ema-0.99"].train == {"ema_decay": 0.99}
    assert rows["ema-0.999"].train == {"ema_decay": 0.999}
    assert "ema-0" not in rows
    assert rows["lr-cosine"].train == {"lr_schedule": "cosine"}  # toggled from constant
    with_ema = [v.name for v in variants(TrainConfig(steps=8, batch_size=4), 64, True)]
    assert [n for n in with_ema if n.startswith("ema")] == ["ema-0"]
