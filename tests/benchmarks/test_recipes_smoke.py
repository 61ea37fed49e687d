"""The evaluation benchmarks in small: classifier sanity table, throughput, recipe arms."""

from __future__ import annotations

import pytest

from benchmarks import arch_throughput, classifier_sanity, recipes
from rf_core.classifier import DigitClassifier


@pytest.mark.slow  # ten sets of 500 digits through the classifier: ~20 s idle, a minute loaded
def test_sanity_rows_score_every_set_against_real():
    clf = DigitClassifier(width=8, feature_dim=16).eval()  # untrained: shape of the table
    rows = classifier_sanity.sanity_rows(clf)
    names = [r.images for r in rows]
    assert names[0] == "real (held out)" and names[-2:] == ["class means", "uniform noise"]
    assert "speckle 5%" in names and "box blur 5×5" in names
    assert rows[0].fd_vs_real == 1.0
    assert all(0 <= r.precision <= 1 and 0 <= r.recall <= 1 for r in rows)


@pytest.mark.slow  # builds and warms up two U-Nets at 28×28: ~15 s idle, 45 s loaded
def test_throughput_is_relative_to_the_first_arch():
    rows = arch_throughput.measure(["patch2-16", "full-16"], rounds=1, steps=1, batch=4)
    assert [r.arch for r in rows] == ["patch2-16", "full-16"]
    assert rows[0].vs_patch2_train == 1.0 and rows[1].params > 0
    assert all(r.train_steps_per_s > 0 and r.forwards_per_s > 0 for r in rows)


def test_arm_config_sets_every_seed_and_the_overrides(tmp_path):
    cfg = recipes.arm_config("patch2", 3, tmp_path)
    assert cfg["seed"] == cfg["base"]["seed"] == cfg["pairs"]["seed"] == 3
    assert cfg["reflow"]["train"]["seed"] == 3 and cfg["runs_dir"] == str(tmp_path)
    assert cfg["model"]["patch_size"] == 2 and cfg["base"]["ema_decay"] == 0.999
    assert recipes.arm_config("default", 3, tmp_path)["model"]["patch_size"] == 1
    seed = recipes.arm_config("seed", 0, tmp_path)
    solver = {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5, "batch_size": 256}
    assert seed["pairs"]["solver"] == solver
    assert recipes.arm_config("default", 3, tmp_path, base_only=True)["reflow"]["rounds"] == 0
    with pytest.raises(SystemExit, match="unknown arm 'nope'"):
        recipes.arm_config("nope", 0, tmp_path)


def test_recipe_table_reports_mean_and_spread():
    def result(seed: int, fd1: float) -> dict:
        m = {f"fd/euler_{k}": fd1 / k for k in recipes.NFES}
        m |= {f"{n}/euler_{k}": 0.5 for n in ("precision", "recall") for k in recipes.NFES}
        m["class_acc/euler_1"] = 0.9
        return {"arm": "a", "seed": seed, "wall_s": 100.0, "metrics": {"1rf": m, "2rf": m}}

    table = recipes.render_table([result(0, 100.0), result(1, 110.0)])
    assert "| a | 1rf | 0,1 | 105 ± 5 |" in table and table.count("\n") == 3
    base = {**result(2, 90.0), "arm": "b", "base_only": True}
    del base["metrics"]["2rf"]
    table = recipes.render_table([base])  # a 1-RF alone: one row, no pipeline wall time
    assert table.count("\n") == 2 and table.endswith("| 0.9 | — |")


def test_cached_renders_each_arm_with_the_seeds_it_has_and_runs_nothing(tmp_path):
    import json

    m = {f"{n}/euler_{k}": 1.0 for n in ("fd", "precision", "recall") for k in recipes.NFES}
    m["class_acc/euler_1"] = 0.9
    (tmp_path / "results").mkdir()
    for arm, seed in [("seed", 1), ("default", 0), ("default", 1), ("other", 0)]:
        r = {"arm": arm, "seed": seed, "wall_s": 1.0, "metrics": {"1rf": m, "2rf": m}}
        (tmp_path / "results" / f"{arm}-s{seed}.json").write_text(json.dumps(r))
    argv = ["--arms", "seed,default", "--cached", "--classifier", "unused", "--out", str(tmp_path)]
    results = recipes.main(argv)
    assert [(r["arm"], r["seed"]) for r in results] == [("seed", 1), ("default", 0), ("default", 1)]
    assert not (tmp_path / "seed-s0").exists()  # the missing seed was not run
    with pytest.raises(SystemExit, match=r"--cached: no results of patch2 in .*results"):
        recipes.main(["--arms", "patch2", "--cached", "--classifier", "x", "--out", str(tmp_path)])
