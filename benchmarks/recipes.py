"""Whole recipes side by side: the seed recipe (baseline arm) against the default and candidates.

Each arm is a pipeline config (``configs/*.yaml``) with optional overrides, run end to end by the
product's own pipeline (``python -m flows.cli run``) in its own process and runs folder, once per
seed (the top-level, base, pair and reflow seeds all set to it). Its wall time is measured, then
its 1-RF and 2-RF checkpoints are scored by the pipeline's evaluation with ONE classifier file
shared by every arm (so no arm's numbers differ by the classifier it happened to train), and
the table reports the mean and the spread (half the range) over seeds::

    python -m benchmarks.recipes --arms seed,default --seeds 0,1 --threads 2 --write

Results are cached per (arm, seed) under ``--out`` (``<out>/results/<arm>-s<seed>.json``), so
an interrupted study resumes; a pipeline stopped midway resumes its own stages too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import BENCHMARKS_MD, NFES, ROOT, machine_line, mean_spread, publish

SECTION = "recipes"
# arm -> (config file, overrides as dotted keys)
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "seed": ("configs/seed_recipe.yaml", {}),
    # full resolution (28 -> 14 -> 7 -> 4), EMA 0.99, 1,000 base steps, RK4 x 8 pairs, 800 reflow
    # steps (its two seeds were measured as the arm "base1k" before it became the default)
    "default": ("configs/mnist5k.yaml", {}),
    # the default with twice the base steps (measured as "full", the default before this one)
    "base2k": ("configs/mnist5k.yaml", {"base.steps": 2000}),
    "base700": ("configs/mnist5k.yaml", {"base.steps": 700}),
    # one lever each: the patch-2 U-Net of the previous default; the seed recipe's learning rate
    "arch-patch2": ("configs/mnist5k.yaml", {"model.patch_size": 2, "model.channel_mult": [1, 2]}),
    "lr2e-4": ("configs/mnist5k.yaml", {"base.lr": 2e-4}),
    # the previous default: a patch-2 U-Net, EMA 0.999 over 2,500 steps, RK4 x 14, 500 reflow steps
    "patch2": (
        "configs/mnist5k.yaml",
        {
            "model.patch_size": 2,
            "model.channel_mult": [1, 2],
            "base.steps": 2500,
            "base.ema_decay": 0.999,
            "pairs.solver": {"method": "rk4", "steps": 14},
            "reflow.train.steps": 500,
        },
    ),
}


def _set(data: dict, dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for key in path:
        data = data.setdefault(key, {})
    data[last] = value


def arm_config(arm: str, seed: int, runs_dir: Path, base_only: bool = False) -> dict:
    """The arm's config as a dict: overrides applied, every seed set to ``seed`` (and no reflow
    round when ``base_only``: the 1-RF alone)."""
    if arm not in ARMS:
        raise SystemExit(f"--arms: unknown arm {arm!r}; known: {', '.join(ARMS)}")
    path, overrides = ARMS[arm]
    data = yaml.safe_load((ROOT / path).read_text())
    for key, value in overrides.items():
        _set(data, key, value)
    for key in ("seed", "base.seed", "pairs.seed", "reflow.train.seed"):
        _set(data, key, seed)
    data["runs_dir"] = str(runs_dir)
    if base_only:
        data["reflow"]["rounds"] = 0
    return data


def run_pipeline(cfg_path: Path, log_path: Path, threads: int) -> float:
    """Run the pipeline CLI on ``cfg_path`` with ``threads`` torch threads; wall seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with open(log_path, "a") as log:
        code = subprocess.run(
            [sys.executable, "-m", "flows.cli", "run", str(cfg_path)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        ).returncode  # fmt: skip
    if code != 0:
        raise RuntimeError(f"pipeline {cfg_path} failed with exit code {code}; see {log_path}")
    return time.perf_counter() - start


def checkpoints(runs_dir: Path, experiment: str, models: tuple[str, ...]) -> dict[str, str]:
    """{"1rf": path, "2rf": path} of a finished pipeline run (exactly one of each)."""
    out = {}
    for k in models:
        found = sorted((runs_dir / "checkpoints").glob(f"{experiment}-{k}-*.pt"))
        if len(found) != 1:
            raise RuntimeError(f"{runs_dir}: expected one {k} checkpoint, found {found}")
        out[k] = str(found[0])
    return out


def score(ckpts: dict[str, str], cfg: dict, classifier: str, out_dir: Path) -> dict:
    """The pipeline's evaluation of the checkpoints with the shared classifier."""
    from tasks.evaluate import EvalJob, evaluate_models

    e = cfg.get("evaluate", {})
    res = evaluate_models.fn(EvalJob(
        ckpts, "mnist5k", str(out_dir), steps=tuple(e.get("steps", NFES)), adaptive=False,
        n_samples=e.get("n_samples", 1000), seed=e.get("seed", 1234), classifier=classifier,
    ))  # fmt: skip
    return {k: dict(v) for k, v in res.metrics.items()}


def run_arm(
    arm: str,
    seed: int,
    out: Path,
    threads: int,
    classifier: str,
    base_only: bool = False,
    log=print,
) -> dict:
    """Run (or reuse) one (arm, seed); the result is cached in ``out/results``.

    ``base_only`` runs (or reuses, from the same runs folder) the arm's 1-RF alone; its wall
    time then counts only what this call ran.
    """
    name = f"{arm}-s{seed}"
    tag = f"{name}-1rf" if base_only else name
    result_path = out / "results" / f"{tag}.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    runs_dir = (out / name).resolve()
    cfg = arm_config(arm, seed, runs_dir, base_only)
    cfg_path = out / f"{tag}.yaml"
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    wall_path = runs_dir / f"wall{'-1rf' if base_only else ''}.json"
    if not wall_path.is_file():
        log(f"{tag}: running the pipeline ({threads} threads)")
        load = os.getloadavg()[0]
        wall = run_pipeline(cfg_path, out / f"{tag}.log", threads)
        stamp = {"wall_s": wall, "threads": threads, "load_start": load}
        wall_path.write_text(json.dumps({**stamp, "load_end": os.getloadavg()[0]}))
    stamp = json.loads(wall_path.read_text())
    log(f"{tag}: pipeline {stamp['wall_s']:.0f} s; scoring with {classifier}")
    models = ("1rf",) if base_only else ("1rf", "2rf")
    ckpts = checkpoints(runs_dir, cfg["name"], models)
    metrics = score(ckpts, cfg, classifier, out / "eval" / tag)
    result = {"arm": arm, "seed": seed, "base_only": base_only, **stamp, "metrics": metrics}
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(json.dumps(result, indent=1))
    return result


def render_table(results: list[dict]) -> str:
    """One row per (arm, model): mean ± half-range over seeds of FD, precision, recall at NFE."""
    head = ["arm", "model", "seeds"] + [f"FD@{k}" for k in NFES]
    head += [f"prec@{k}" for k in (1, 8)] + [f"rec@{k}" for k in (1, 8)] + ["class@1", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    arms = list(dict.fromkeys(r["arm"] for r in results))
    for arm in arms:
        rs = [r for r in results if r["arm"] == arm]
        for model in ("1rf", "2rf"):
            ms = [r["metrics"][model] for r in rs if model in r["metrics"]]
            if not ms:
                continue

            def cell(key: str, ms=ms) -> str:
                return mean_spread([m[key] for m in ms])

            cells = [arm, model, ",".join(str(r["seed"]) for r in rs)]
            cells += [cell(f"fd/euler_{k}") for k in NFES]
            cells += [cell(f"precision/euler_{k}") for k in (1, 8)]
            cells += [cell(f"recall/euler_{k}") for k in (1, 8)]
            walls = [r["wall_s"] for r in rs if not r.get("base_only")]
            cells += [cell("class_acc/euler_1"), mean_spread(walls) if walls else "—"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arms", default="seed,default", help=f"comma-separated: {', '.join(ARMS)}")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--threads", type=int, default=2, help="torch threads of each pipeline")
    p.add_argument("--base-only", action="store_true", help="the arms' 1-RF alone")
    p.add_argument("--classifier", required=True, help="the shared classifier checkpoint")
    p.add_argument("--out", default=str(ROOT / "runs" / "recipes"))
    p.add_argument("--write", action="store_true", help="rewrite the BENCHMARKS.md section")
    p.add_argument("--bench-md", default=str(BENCHMARKS_MD))
    p.add_argument("--notes", help="markdown file appended to the section")
    p.add_argument("--cached", action="store_true", help="table of the arms' cached results only")
    a = p.parse_args(argv)
    out = Path(a.out)

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    if a.cached:  # whatever seeds each arm has, nothing run
        found = [json.loads(f.read_text()) for f in sorted((out / "results").glob("*.json"))]
        results = [r for arm in a.arms.split(",") for r in found if r["arm"] == arm]
        if not results:
            raise SystemExit(f"--cached: no results of {a.arms} in {out / 'results'}")
    else:
        results = [
            run_arm(arm, int(s), out, a.threads, a.classifier, a.base_only, log)
            for arm in a.arms.split(",")
            for s in a.seeds.split(",")
        ]
    command = "python -m benchmarks.recipes " + " ".join(sys.argv[1:] if argv is None else argv)
    body = "\n".join([
        "## Recipes: the seed recipe beside the default (MNIST-5k)",
        "",
        f"Command: `{command.strip()}` · {time.strftime('%Y-%m-%d')} · {machine_line()}",
        "",
        "Mean ± half the range over the seeds; FD lower is better, precision (prec), recall (rec)"
        " and class agreement higher; Euler steps after @; 1,000 samples on shared noise and"
        " labels; one classifier for every arm. Wall time: the whole `flows.cli run` pipeline.",
        "",
        render_table(results),
    ])  # fmt: skip
    publish(SECTION, body, a.write, a.bench_md, a.notes)
    return results


if __name__ == "__main__":
    main()
