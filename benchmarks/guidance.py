"""Classifier-free guidance on MNIST-5k: class agreement and Fréchet distance against the scale w.

Each arm is the ``make run`` config's 1-RF (same U-Net, same 2,500 training steps) trained by the
pipeline itself, with or without label dropout, then evaluated by the pipeline's NFE sweep at
Euler 1 and 4 steps for every guidance scale (same noise and labels, the project's digit
classifier). Two training seeds per arm; the table shows mean ± half the range::

    python -m benchmarks.guidance --write          # ~1 h on 2 loaded CPU cores

Finished pipeline stages are reused from ``--runs-dir``, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import yaml

from benchmarks.common import PIPELINE_CONFIG, ROOT, machine_line, write_section

SECTION = "guidance"
SCALES = (0.0, 1.0, 2.0, 4.0)
ARMS = {"label dropout 0.1": 0.1, "no dropout (baseline)": 0.0}
ARM_NAMES = dict(zip(("dropout", "baseline"), ARMS, strict=True))


def arm_config(runs: Path, dropout: float, seed: int, a: argparse.Namespace) -> dict:
    """The pipeline config of one arm: the make-run 1-RF, no reflow, a guidance sweep."""
    cfg = yaml.safe_load(Path(a.config).read_text())
    cfg |= {"name": f"guidance-d{dropout:g}-s{seed}", "runs_dir": str(runs), "seed": seed}
    cfg["base"] = {**cfg["base"], "label_dropout": dropout}
    if a.base_steps:  # smoke runs only
        cfg["base"]["steps"] = a.base_steps
    cfg["reflow"] = {**cfg["reflow"], "rounds": 0}
    ev = {"steps": [1, 4], "n_samples": a.n_samples, "guidance": list(SCALES) if dropout else [0]}
    cfg["evaluate"] = {**cfg["evaluate"], **ev}
    if a.classifier_steps:
        cfg["evaluate"]["classifier"] = {"steps": a.classifier_steps}
    return cfg


def run_arm(runs: Path, dropout: float, seed: int, a: argparse.Namespace) -> list:
    """The evaluation rows of one arm (the pipeline reuses what a previous run finished)."""
    from flows.config import load_config
    from flows.pipeline import pipeline

    return list(pipeline(load_config(arm_config(runs, dropout, seed, a))).rows)


def _cell(values: list[float], digits: int) -> str:
    mean = statistics.fmean(values)
    half = (max(values) - min(values)) / 2
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def render(results: dict[tuple[str, int], list], seeds: list[int], n_samples: int) -> str:
    """A row per (arm, w): class agreement and FD at 1 and 4 steps, mean ± half range."""
    lines = [
        "| arm | w | class agreement, 1 step | 4 steps | FD, 1 step | 4 steps | NFE 1 / 4 |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, dropout in ARMS.items():
        if (arm, seeds[0]) not in results:
            continue
        for w in SCALES if dropout else (0.0,):
            cells, nfe = [], []
            for field, digits in (("class_acc", 3), ("fd", 1)):
                for steps in (1, 4):
                    got = [r for s in seeds for r in results[(arm, s)]]
                    got = [r for r in got if r.guidance == w and r.steps == steps]
                    cells.append(_cell([getattr(r, field) for r in got], digits))
                    nfe.append(got[0].nfe)
            lines.append(f"| {arm} | {w:g} | {' | '.join(cells)} | {nfe[0]} / {nfe[1]} |")
    return "\n".join(lines) + (
        f"\n\nSeeds {', '.join(map(str, seeds))}; {n_samples} samples per cell, labels 0-9 "
        "balanced, the same noise in every cell of a seed. Class agreement: the project's digit "
        "classifier's label equals the conditioning label (higher is better); FD: Fréchet "
        "distance in its features (lower is better). A guided step costs two evaluations."
    )


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "bench-guidance")
    p.add_argument("--config", type=Path, default=PIPELINE_CONFIG, help="the pipeline config")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--write", action="store_true", help="rewrite the BENCHMARKS.md section")
    p.add_argument(
        "--arms", nargs="+", choices=["dropout", "baseline"], default=["dropout", "baseline"]
    )
    p.add_argument("--base-steps", type=int, help="override the 1-RF's steps (smoke runs)")
    p.add_argument("--classifier-steps", type=int, help="override (smoke runs)")
    a = p.parse_args(argv)
    start, results = time.perf_counter(), {}
    arms = {ARM_NAMES[k]: ARMS[ARM_NAMES[k]] for k in a.arms}
    for arm, dropout in arms.items():
        for seed in a.seeds:
            results[(arm, seed)] = run_arm(a.runs_dir, dropout, seed, a)
    body = (
        f"## Classifier-free guidance (MNIST-5k 1-RF of {a.config.name}, "
        "`python -m benchmarks.guidance`)\n\n"
        + render(results, a.seeds, a.n_samples)
        + f"\n\nMeasured on {machine_line()}; {time.perf_counter() - start:.0f} s in all."
    )
    print(body)
    if a.write:
        write_section(SECTION, body)
    return body


if __name__ == "__main__":
    main()
