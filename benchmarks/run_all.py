"""`make bench`: run every CPU benchmark module in benchmarks/ and rewrite BENCHMARKS.md's tables.

    python -m benchmarks.run_all                 # all CPU benchmarks (< 15 min on 2 cores)
    python -m benchmarks.run_all --only pairgen  # one of them
    python -m benchmarks.run_all --list          # what would run

Each benchmark runs in its own process (``python -m benchmarks.<name>``) so one's memory and
threads cannot disturb the next, and rewrites only its own marked section of BENCHMARKS.md
(``<!-- name:start --> ... <!-- name:end -->``); this script adds a summary section with the wall
time of each. A benchmark module is any ``benchmarks/*.py`` with a ``main`` function, except the
helpers below and the GPU benchmark (``benchmarks/gpu.sh``).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import machine_line, markdown_table, write_section

HERE = Path(__file__).resolve().parent
# Not part of `make bench`: helpers, the GPU script, and the studies that retrain models (their
# full runs take far longer than the 15-minute budget; each has its own command in BENCHMARKS.md).
NOT_BENCHMARKS = {
    "__init__", "common", "run_all", "gpu_bench", "pairgen_base", "ablation", "recipes",
}  # fmt: skip
BUDGET_S = 15 * 60


@dataclass(frozen=True)
class RunRow:
    """One benchmark process."""

    benchmark: str
    seconds: float
    exit_code: int


def discover() -> list[str]:
    """Names of the CPU benchmark modules (files defining a top-level ``main``), sorted."""
    names = []
    for path in sorted(HERE.glob("*.py")):
        if path.stem in NOT_BENCHMARKS or path.stem.startswith("_"):
            continue
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            names.append(path.stem)
    return names


def run_one(name: str, timeout: float) -> RunRow:
    """Run ``python -m benchmarks.<name>`` with the output passed through."""
    start = time.perf_counter()
    try:
        code = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}"], cwd=HERE.parent, timeout=timeout
        ).returncode
    except subprocess.TimeoutExpired:
        print(f"benchmarks.{name} ran past {timeout:.0f} s and was stopped", file=sys.stderr)
        code = 124
    return RunRow(name, time.perf_counter() - start, code)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; returns a non-zero exit code when any failed."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run_all", description=__doc__)
    p.add_argument("--only", nargs="+", default=None, help="run only these benchmark names")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    a = p.parse_args(argv)
    names = discover()
    if a.only:
        unknown = sorted(set(a.only) - set(names))
        if unknown:
            p.error(f"--only: unknown benchmark(s) {unknown}; available: {names}")
        names = [n for n in names if n in a.only]
    if a.list:
        print("\n".join(names))
        return 0
    rows, start = [], time.perf_counter()
    for name in names:
        left = BUDGET_S - (time.perf_counter() - start)
        print(f"== benchmarks.{name} ({left:.0f} s of the {BUDGET_S} s budget left)", flush=True)
        rows.append(run_one(name, timeout=max(left, 60.0)))
    total = time.perf_counter() - start
    body = "\n".join(
        [
            "## Summary of `make bench`",
            "",
            f"Command: `python -m benchmarks.run_all` · {time.strftime('%Y-%m-%d')} · "
            f"{machine_line()} · total {total:.0f} s (budget {BUDGET_S} s)",
            "",
            markdown_table(rows),
        ]
    )
    write_section("run_all", body)
    print(body)
    return max((r.exit_code for r in rows), default=0)


if __name__ == "__main__":
    sys.exit(main())
