"""RF++ ablation of 2-RF training: one lever changed from the pipeline's 2-RF per row.

Starts from a finished pipeline run (its 1-RF, default pair store and classifier), trains 2-RF
variants at the same budget and scores each with the pipeline's evaluation (same noise, labels
and classifier), so every row is comparable with the others and with the pipeline's 2-RF::

    python -m flows.cli run configs/mnist5k.yaml --runs-dir runs/ablation
    python -m benchmarks.ablation --config configs/mnist5k.yaml --runs-dir runs/ablation --write

Levers (each toggled from the config's reflow settings): time sampler, loss, lr schedule,
init from 1-RF, EMA, twice and half the pairs, pairs from the seed recipe's solver (dopri5 1e-5: the
pair-quality check), and a second training seed of the baseline (run-to-run noise). Results are
cached per variant under ``<runs>/ablation/``, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.ablation_steps import (
    SEED_RECIPE_SOLVER,
    RunInputs,
    claim,
    ensure_store,
    load_pipeline_config,
    locate,
    nfe_per_pair,
    score,
    train_2rf,
)
from benchmarks.common import BENCHMARKS_MD, machine_line, publish
from rf_core.config import TrainConfig
from rf_core.training import load_checkpoint
from storage.pairstore import PairStore

SECTION = "ablation"


@dataclass(frozen=True)
class Variant:
    """One row: the baseline with one lever changed.

    Attributes:
        name: short id (file names, ``--variants``).
        lever: what changed, for the table.
        train: TrainConfig fields that differ from the baseline's.
        pairs: "default", "double" / "half" (2n / n/2 pairs, same solver and seed) or "seed"
            (the seed recipe's solver).
        toggle_init: flip ``reflow.init_from_previous`` (1-RF init <-> from scratch).
    """

    name: str
    lever: str
    train: dict[str, Any] = field(default_factory=dict)
    pairs: str = "default"
    toggle_init: bool = False


def variants(base: TrainConfig, n_pairs: int, init: bool) -> list[Variant]:
    """The rows, in run order (most wanted first); each toggles one setting of ``base``."""
    t = "uniform" if base.t_sampler != "uniform" else "u_shaped"
    loss = "pseudo_huber" if base.loss == "mse" else "mse"
    sched = "cosine" if base.lr_schedule == "constant" else "constant"
    # without EMA, a short memory (0.99: the last ~100 steps) and a long one (0.999)
    emas = [0.0] if base.ema_decay > 0 else [0.99, 0.999]
    init_lever = "init 1-RF → scratch" if init else "init scratch → 1-RF"
    return [
        Variant("baseline", "pipeline 2-RF settings"),
        Variant("seed-pairs", "pairs: seed recipe (dopri5 1e-5)", pairs="seed"),
        Variant("seed1", f"training seed {base.seed} → {base.seed + 1}", {"seed": base.seed + 1}),
        Variant(f"t-{t}", f"t sampler {base.t_sampler} → {t}", {"t_sampler": t}),
        Variant(f"loss-{loss}", f"loss {base.loss} → {loss}", {"loss": loss}),
        Variant(f"lr-{sched}", f"lr {base.lr_schedule} → {sched}", {"lr_schedule": sched}),
        *(Variant(f"ema-{e:g}", f"EMA {base.ema_decay:g} → {e:g}", {"ema_decay": e}) for e in emas),
        Variant("init-toggled", init_lever, toggle_init=True),
        Variant("pairs-x2", f"pairs {n_pairs} → {2 * n_pairs}", pairs="double"),
        Variant("pairs-half", f"pairs {n_pairs} → {n_pairs // 2}", pairs="half"),
    ]


def store_for(v: Variant, inputs: RunInputs, out: Path, log) -> tuple[str, float]:
    """The pair store a variant trains on, generated first when needed (seconds spent)."""
    if v.pairs == "default":
        return inputs.store, 0.0
    like = PairStore.open(inputs.store)
    model, _ = load_checkpoint(inputs.base_ckpt)
    if v.pairs == "seed":
        return ensure_store(str(out / "stores" / "seed-recipe.zarr"), like, like.n,
                            SEED_RECIPE_SOLVER, model, log)  # fmt: skip
    n = 2 * like.n if v.pairs == "double" else like.n // 2  # "half": like's first chunks
    return ensure_store(str(out / "stores" / f"pairs-{n}.zarr"), like, n, like.solver, model, log)


def run_variant(
    v: Variant, inputs: RunInputs, base: TrainConfig, out: Path, log=print
) -> dict[str, Any]:
    """Train (or reuse) and score one variant; the result is cached in ``out/results``."""
    path = out / "results" / f"{v.name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    if not claim(path.with_suffix(".running")):
        log(f"{v.name}: another live process is running it; skipped")
        return {}
    try:
        return _run_variant(v, inputs, base, out, path, log)
    finally:
        path.with_suffix(".running").unlink(missing_ok=True)


def _run_variant(
    v: Variant, inputs: RunInputs, base: TrainConfig, out: Path, path: Path, log
) -> dict[str, Any]:
    store, gen_s = store_for(v, inputs, out, log)
    train = TrainConfig(**{**base.model_dump(), **v.train})
    init = inputs.cfg.reflow.init_from_previous != v.toggle_init
    reuse = v.name == "baseline" and inputs.reflow_ckpt is not None
    if reuse and load_checkpoint(inputs.reflow_ckpt)[1]["train_config"] == train.model_dump(
        mode="json"
    ):
        ckpt, train_s, origin = inputs.reflow_ckpt, None, "pipeline checkpoint"
        log(f"{v.name}: the pipeline's 2-RF {ckpt.name}")
    else:
        log(f"{v.name}: training 2-RF ({v.lever}) for {train.steps} steps")
        ckpt, train_s = train_2rf(
            inputs, train, store, init, out / "checkpoints" / f"{v.name}.pt", log
        )
        origin = "trained here"
    start = time.perf_counter()
    metrics = score(inputs, v.name, ckpt, out / "eval" / v.name)
    pairs = PairStore.open(store)
    result = {
        "variant": v.name, "lever": v.lever, "metrics": metrics, "origin": origin,
        "train_s": train_s, "eval_s": time.perf_counter() - start, "gen_s": gen_s,
        "train": train.model_dump(mode="json"), "init_from_1rf": init, "store": store,
        "store_n": pairs.n, "solver": pairs.attrs["solver"], "nfe_per_pair": nfe_per_pair(pairs),
        "checkpoint": str(ckpt),
    }  # fmt: skip
    path.write_text(json.dumps(result, indent=1))
    fd1 = metrics.get("fd/euler_1", metrics.get("swd/euler_1"))
    log(f"{v.name}: done, 1-step score {fd1:.4g}")
    return result


def reference(inputs: RunInputs, out: Path) -> dict[str, float]:
    """1-RF scored by the same evaluation (the "as good as 1-RF at 4 steps" target)."""
    path = out / "results" / "_1rf.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(score(inputs, "1rf", inputs.base_ckpt, out / "eval" / "1rf")))
    return json.loads(path.read_text())


def _pct(value: float | None, base: float | None) -> str:
    return "—" if value is None or not base else f"{100 * (value - base) / base:+.1f}%"


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_table(results: list[dict[str, Any]], ref: dict[str, float], metric: str) -> str:
    """Markdown table: one row per variant, the 1-step and 2-step score with its delta."""
    base = next((r["metrics"] for r in results if r["variant"] == "baseline"), {})
    head = (
        f"| variant | lever | {metric}@1 | Δ@1 | {metric}@2 | Δ@2 | {metric}@4 | {metric}@8 "
        "| prec@1 | rec@1 | class acc@1 | straightness | pairs NFE/pair | train s |"
    )
    lines = [head, "|" + "---|" * 14]
    one = [("1-RF (reference)", "—", ref, None, None)]
    one += [(r["variant"], r["lever"], r["metrics"], r, r.get("train_s")) for r in results]
    for name, lever, m, r, train_s in one:
        s = [m.get(f"{metric}/euler_{k}") for k in (1, 2, 4, 8)]
        cells = [
            name, lever, _num(s[0]), _pct(s[0], base.get(f"{metric}/euler_1")) if r else "—",
            _num(s[1]), _pct(s[1], base.get(f"{metric}/euler_2")) if r else "—",
            _num(s[2]), _num(s[3]), _num(m.get("precision/euler_1"), 3),
            _num(m.get("recall/euler_1"), 3), _num(m.get("class_acc/euler_1"), 3),
            _num(m.get("straightness"), 2), _num(r.get("nfe_per_pair") if r else None, 0),
            "pipeline" if r and train_s is None else _num(train_s, 0),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(results: list[dict[str, Any]], ref: dict[str, float], metric: str) -> list[str]:
    """Plain-language lines: run-to-run noise, the pair-quality check, the best row."""
    by = {r["variant"]: r["metrics"].get(f"{metric}/euler_1") for r in results}
    base, out = by.get("baseline"), []
    if base is not None and by.get("seed1") is not None:
        gap = abs(by["seed1"] - base) / base
        out.append(
            f"- Run-to-run noise: the baseline with another training seed scores "
            f"{by['seed1']:.1f} vs {base:.1f} at 1 step ({100 * gap:.1f}% apart; one replicate)."
        )
    if base is not None and by.get("seed-pairs") is not None:
        ratio = base / by["seed-pairs"]
        verdict = "within 5%: met" if ratio <= 1.05 else "more than 5% worse: not met"
        out.append(
            f"- Pair-quality check: 2-RF on default pairs {metric}@1 = {base:.1f}, on "
            f"seed-recipe pairs {by['seed-pairs']:.1f}; ratio default/seed = {ratio:.3f} "
            f"({verdict})."
        )
    scored = [(v, s) for v, s in by.items() if s is not None]
    target = ref.get(f"{metric}/euler_4")
    if scored and target is not None:
        best, s = min(scored, key=lambda vs: vs[1])
        out.append(
            f"- Aim higher (2-RF at 1 step as good as 1-RF at 4 steps, {target:.1f} here): the "
            f"best row, {best}, reaches {s:.1f} ({s / target:.2f}× the target)."
        )
    return out


def render(
    results: list[dict[str, Any]], ref: dict[str, float], command: str, seconds: float
) -> str:
    """The BENCHMARKS.md section: command, machine, table and summary lines."""
    metric = "fd" if any("fd/euler_1" in r["metrics"] for r in results) else "swd"
    solvers = {r["variant"]: r["solver"] for r in results}
    base = next((r for r in results if r["variant"] == "baseline"), None)
    if base is None:  # a partial call (--variants without baseline): describe by the first row
        base = {**results[0], "lever": "(baseline not in this call)"}
    t = base["train"]
    lines = [
        "## RF++ ablation: 2-RF training levers and the pair-quality check",
        "",
        f"Command: `{command}` · {time.strftime('%Y-%m-%d')} · {machine_line()} · "
        f"{seconds:.0f} s in this call",
        "",
        f"Baseline ({base['lever']}): {t['steps']} steps × batch {t['batch_size']},"
        f" lr {t['lr']:g}, EMA {t['ema_decay']:g}, t {t['t_sampler']}, loss {t['loss']}, init "
        f"from 1-RF: {base['init_from_1rf']}, {base['store_n']} pairs from "
        f"`{json.dumps(base['solver'])}`. Every other row changes one lever at the "
        "same budget. Scores: the pipeline's evaluation (same noise, labels and classifier; "
        f"{metric.upper()} lower is better; Euler steps after @); Δ vs the baseline.",
        "",
        render_table(results, ref, metric),
        "",
        *summary(results, ref, metric),
    ]
    if "seed-pairs" in solvers:
        lines.append(f"- Seed-recipe pair solver: `{json.dumps(solvers['seed-pairs'])}`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="config of the pipeline run")
    p.add_argument("--runs-dir", help="runs folder of that run (default: the config's)")
    p.add_argument("--variants", help="comma-separated variant names (default: all)")
    p.add_argument("--steps", type=int, help="reduce the 2-RF budget of every variant")
    p.add_argument("--out", help="results folder (default <runs>/ablation)")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--base-ckpt")
    p.add_argument("--store")
    p.add_argument("--classifier")
    p.add_argument("--write", action="store_true", help="rewrite the BENCHMARKS.md section")
    p.add_argument("--bench-md", default=str(BENCHMARKS_MD))
    p.add_argument("--notes", help="markdown file appended to the section")
    a = p.parse_args(argv)
    start = time.perf_counter()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    cfg = load_pipeline_config(a.config, a.runs_dir)
    inputs = locate(cfg, a.base_ckpt, a.store, a.classifier)
    out = Path(a.out) if a.out else cfg.runs / "ablation"
    base = cfg.reflow.train
    if a.steps:
        base = TrainConfig(**{**base.model_dump(), "steps": a.steps})
    rows = variants(base, PairStore.open(inputs.store).n, cfg.reflow.init_from_previous)
    if a.variants:
        wanted = a.variants.split(",")
        unknown = sorted(set(wanted) - {v.name for v in rows})
        if unknown:
            known = ", ".join(v.name for v in rows)
            raise SystemExit(f"--variants: unknown {', '.join(unknown)}; known: {known}")
        rows = [v for v in rows if v.name in wanted]

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)

    ref = reference(inputs, out)
    results = [r for v in rows if (r := run_variant(v, inputs, base, out, log))]
    if not results:  # every row is another live process's: it writes the table when done
        log("no variant finished in this call; nothing to write")
        return results
    command = "python -m benchmarks.ablation " + " ".join(sys.argv[1:] if argv is None else argv)
    body = render(results, ref, command.strip(), time.perf_counter() - start)
    publish(SECTION, body, a.write, a.bench_md, a.notes)
    return results


if __name__ == "__main__":
    main()
