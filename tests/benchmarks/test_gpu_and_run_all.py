"""The GPU benchmark's CPU fallback path and `make bench`'s discovery (no timing asserts)."""

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks import gpu_bench, run_all

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_bench_dry_run_on_cpu_reports_every_mode(tmp_path):
    out = tmp_path / "gpu.json"
    rows = gpu_bench.main(["--device", "cpu", "--dry-run", "--out", str(out)])
    modes = {(r.task, r.mode) for r in rows}
    assert ("pairs", "seed dopri5 1e-5 fp32") in modes
    assert {("pairs", f"rk4×2 {m}") for m in ("fp32", "tf32", "bf16")} <= modes
    assert {("training", m) for m in ("fp32", "tf32", "bf16")} <= modes
    cifar = [r for r in rows if r.task.startswith("training cifar10 U-Net")]
    assert [r.mode for r in cifar] == ["fp32", "bf16"] and all(r.per_s > 0 for r in cifar)
    assert cifar[0].batch == 4 and "3 steps" in cifar[0].task  # the dry run's sizes
    fp32 = next(r for r in rows if r.mode == "rk4×2 fp32")
    bf16 = next(r for r in rows if r.mode == "rk4×2 bf16")
    assert fp32.nfe == 8 and bf16.pair_error > fp32.pair_error  # bf16 costs accuracy
    assert json.loads(out.read_text())[0]["task"] == "pairs"


def test_gpu_bench_runs_only_the_parts_asked_for(tmp_path):
    rows = gpu_bench.main(
        ["--device", "cpu", "--dry-run", "--parts", "cifar", "--out", str(tmp_path / "g.json")]
    )
    assert {r.task.split(" ")[0] for r in rows} == {"training"} and len(rows) == 2
    with pytest.raises(SystemExit):
        gpu_bench.main(["--device", "cpu", "--dry-run", "--parts", "cifar,nope"])


def test_gpu_sh_refuses_without_cuda_and_names_the_fallback():
    res = subprocess.run([str(ROOT / "benchmarks" / "gpu.sh")], capture_output=True, text=True)
    assert res.returncode == 2 and "--dry-run" in res.stderr


def test_run_all_discovers_the_cpu_benchmarks_only():
    names = run_all.discover()
    assert "pairgen" in names
    assert not {"common", "run_all", "gpu_bench", "pairgen_base"} & set(names)
