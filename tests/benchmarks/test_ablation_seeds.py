"""Combining per-seed ablation folders: the spread, the verdict rule and the written section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.ablation_seeds import load, main, verdict

TRAIN = {"steps": 8, "batch_size": 4, "lr": 1e-3, "ema_decay": 0.0, "t_sampler": "u_shaped",
         "loss": "mse"}  # fmt: skip


def _folder(root: Path, name: str, scores: dict[str, float]) -> Path:
    """An ablation output folder with one result per variant (FD@k = score * k^-0.5)."""
    folder = root / name
    (folder / "results").mkdir(parents=True)
    (folder / "results" / "_1rf.json").write_text(json.dumps({"fd/euler_1": 900.0}))
    for variant, s in scores.items():
        metrics = {f"fd/euler_{k}": s / k**0.5 for k in (1, 2, 4, 8)}
        metrics |= {"precision/euler_1": 0.3, "recall/euler_1": 0.6, "straightness": 0.01}
        result = {"variant": variant, "lever": f"lever of {variant}", "metrics": metrics,
                  "train": TRAIN, "init_from_1rf": True, "store_n": 64}  # fmt: skip
        (folder / "results" / f"{variant}.json").write_text(json.dumps(result))
    return folder


def test_verdict_needs_every_seed_to_move_the_same_way_by_more_than_the_spread():
    assert verdict([50, 60], [40, 48]) == "better"  # -10, -12; spread 5
    assert verdict([50, 60], [60, 72]) == "worse"
    assert verdict([50, 60], [46, 55]) == "within spread"  # mean -4.5 < spread 5
    assert verdict([50, 60], [30, 70]) == "within spread"  # signs differ
    assert verdict([50, 51], [40, 30]) == "better"  # -10, -21; the variant's spread is 5
    assert verdict([50, 51], [44, 20]) == "within spread"  # -6 is less than its spread 12
    assert verdict([50, 60], [50.5, 80]) == "within spread"  # one seed barely moves
    assert verdict([50], [10]) == "within spread"  # one seed is never a finding


def test_table_pairs_each_seed_with_its_own_baseline_and_writes_the_section(tmp_path):
    s0 = _folder(tmp_path, "s0", {"baseline": 50, "loss-pseudo_huber": 40, "t-uniform": 52})
    s1 = _folder(tmp_path, "s1", {"baseline": 60, "loss-pseudo_huber": 47, "t-uniform": 57})
    md = tmp_path / "B.md"
    md.write_text("# b\n\n<!-- other:start -->\nkeep me\n<!-- other:end -->\n")
    body = main([str(s0), str(s1), "--write", "--bench-md", str(md)])
    rows = {line.split(" | ")[0].strip("| "): line for line in body.splitlines() if "|" in line}
    assert "| 55 ± 5 |" in rows["baseline"]
    assert rows["loss-pseudo_huber"].endswith("| better | better |")
    assert rows["t-uniform"].endswith("| within spread | within spread |")
    assert "1rf" not in rows
    text = md.read_text()
    assert "keep me" in text and text.count("<!-- ablation:start -->") == 1


def test_a_folder_without_a_baseline_is_named(tmp_path):
    bad = _folder(tmp_path, "s0", {"t-uniform": 52})
    with pytest.raises(SystemExit, match=r"s0: no results/baseline\.json; run benchmarks\.abl"):
        load(bad)
