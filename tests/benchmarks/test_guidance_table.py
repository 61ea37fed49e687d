"""The guidance benchmark's table: mean ± half the range over seeds, per arm, scale and steps."""

from __future__ import annotations

import argparse

from benchmarks.common import PIPELINE_CONFIG
from benchmarks.guidance import ARMS, SCALES, arm_config, render
from flows.config import load_config
from rf_core.evaluate import EvalRow


def _rows(acc: float, guided: bool) -> list[EvalRow]:
    scales = SCALES if guided else (0.0,)
    return [
        EvalRow("1rf", "euler", s, s * (2 if w else 1), 100.0 - w, acc + w / 10, None, 5.0,
                guidance=w)
        for w in scales
        for s in (1, 4)
    ]  # fmt: skip


def test_the_table_shows_mean_and_half_range_over_seeds():
    dropout, baseline = ARMS
    results = {(dropout, 0): _rows(0.5, True), (dropout, 1): _rows(0.7, True)}
    results |= {(baseline, 0): _rows(0.6, False), (baseline, 1): _rows(0.6, False)}
    table = render(results, [0, 1], 1000)
    lines = table.splitlines()
    cells = "0.600 ± 0.100 | 0.600 ± 0.100 | 100.0 ± 0.0 | 100.0 ± 0.0"
    assert lines[2] == f"| label dropout 0.1 | 0 | {cells} | 1 / 4 |"
    assert lines[5].startswith("| label dropout 0.1 | 4 | 1.000 ± 0.100 |")
    assert lines[5].endswith("| 2 / 8 |")  # a guided step costs two evaluations
    assert lines[6].startswith("| no dropout (baseline) | 0 | 0.600 ± 0.000 |")
    assert "Seeds 0, 1; 1000 samples" in table
    assert "baseline" not in render({(dropout, 0): _rows(0.5, True)}, [0], 10)


def test_each_arm_is_a_valid_pipeline_config(tmp_path):
    a = argparse.Namespace(
        n_samples=1000, base_steps=None, classifier_steps=None, config=PIPELINE_CONFIG
    )
    guided = load_config(arm_config(tmp_path, 0.1, 1, a))
    assert guided.base.label_dropout == 0.1 and guided.evaluate.guidance == SCALES
    assert guided.reflow.rounds == 0 and guided.seed == 1 and guided.evaluate.steps == (1, 4)
    plain = load_config(arm_config(tmp_path, 0.0, 0, a))
    assert plain.base.label_dropout == 0 and plain.evaluate.guidance == (0.0,)
    assert plain.base.steps == guided.base.steps  # the make-run 1-RF budget
