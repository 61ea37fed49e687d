"""The RF++ ablation over several seeds: one table of mean ± spread per lever, and a verdict.

``benchmarks.ablation`` measures every lever on one pipeline run (one 1-RF, one pair store, one
training seed). A difference there may be noise, so the ablation is run once per pipeline seed
(each with its own 1-RF, pairs and reflow seed) and this module combines those result folders::

    python -m benchmarks.ablation --config runs/recipes/default-s0.yaml --out runs/abl-s0
    python -m benchmarks.ablation --config runs/recipes/default-s1.yaml --out runs/abl-s1
    python -m benchmarks.ablation_seeds runs/abl-s0 runs/abl-s1 --write

A lever counts as a finding only when, in every seed, it moves the score against that seed's
own baseline the same way and by more than the seed spread (half the range of the baseline's
score over the seeds, or of the variant's, whichever is larger); every other row reads "within
spread".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BENCHMARKS_MD, NFES, machine_line, mean_spread, publish

SECTION = "ablation"


def load(folder: Path) -> dict[str, dict[str, Any]]:
    """``{variant: result}`` of one ablation output folder (its ``results/*.json``)."""
    found = {}
    for path in sorted((folder / "results").glob("*.json")):
        result = json.loads(path.read_text())
        found[result.get("variant", "1rf")] = result
    if "baseline" not in found:
        raise SystemExit(f"{folder}: no results/baseline.json; run benchmarks.ablation there first")
    return found


def _half_range(values: list[float]) -> float:
    return (max(values) - min(values)) / 2


def verdict(base: list[float], variant: list[float]) -> str:
    """Finding or not, per seed paired with its own baseline (lower is better)."""
    diffs = [v - b for v, b in zip(variant, base, strict=True)]
    spread = max(_half_range(base), _half_range(variant))
    if len(diffs) >= 2 and all(d < -spread for d in diffs):
        return "better"
    if len(diffs) >= 2 and all(d > spread for d in diffs):
        return "worse"
    return "within spread"


def render_table(runs: list[dict[str, dict[str, Any]]], metric: str = "fd") -> str:
    """Rows: every variant present in all runs; cells mean ± half-range over the runs."""
    names = [n for n in runs[0] if n != "1rf" and all(n in r for r in runs)]
    head = ["variant", "lever"] + [f"{metric.upper()}@{k}" for k in NFES]
    head += ["prec@1", "rec@1", "straightness", "verdict @1", "verdict @2"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:

        def values(key: str, name=name) -> list[float]:
            return [r[name]["metrics"][key] for r in runs]

        lever = runs[0][name]["lever"]
        cells = [name, lever] + [mean_spread(values(f"{metric}/euler_{k}")) for k in NFES]
        cells += [mean_spread(values(k)) for k in ("precision/euler_1", "recall/euler_1")]
        cells += [mean_spread(values("straightness"))]
        if name == "baseline":
            cells += ["—", "—"]
        else:
            base = [r["baseline"]["metrics"] for r in runs]
            for k in (1, 2):
                key = f"{metric}/euler_{k}"
                cells.append(verdict([b[key] for b in base], values(key)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+", help="benchmarks.ablation output folders, one per seed")
    p.add_argument("--write", action="store_true", help="rewrite the BENCHMARKS.md section")
    p.add_argument("--bench-md", default=str(BENCHMARKS_MD))
    p.add_argument("--notes", help="markdown file appended to the section")
    a = p.parse_args(argv)
    runs = [load(Path(f)) for f in a.folders]
    base = runs[0]["baseline"]
    t, metric = base["train"], "fd" if "fd/euler_1" in base["metrics"] else "swd"
    command = "python -m benchmarks.ablation_seeds " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    body = "\n".join([
        "## RF++ ablation: 2-RF training levers on several seeds",
        "",
        f"Command: `{command.strip()}` · {time.strftime('%Y-%m-%d')} · {machine_line()}",
        "",
        f"{len(runs)} pipeline runs (seeds of 1-RF, pairs and reflow training differ), each"
        f" ablated by `benchmarks.ablation`. Baseline: {t['steps']} steps × batch"
        f" {t['batch_size']}, lr {t['lr']:g}, EMA {t['ema_decay']:g}, t {t['t_sampler']}, loss"
        f" {t['loss']}, init from 1-RF: {base['init_from_1rf']}, {base['store_n']} pairs. Cells:"
        " mean ± half the range over the runs; lower FD is better. Verdict: better or worse"
        " only when every run moves the same way against its own baseline, each by more than"
        " the spread.",
        "",
        render_table(runs, metric),
    ])  # fmt: skip
    return publish(SECTION, body, a.write, a.bench_md, a.notes)


if __name__ == "__main__":
    main()
