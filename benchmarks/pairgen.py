"""Pair generation: ``pairs.solver: auto`` (the product's screen) vs the seed recipe, one model.

    python -m benchmarks.pairgen                 # CPU run that rewrites BENCHMARKS.md's section
    python -m benchmarks.pairgen --checkpoint runs/checkpoints/<1-RF>.pt   # a pipeline's model
    python -m benchmarks.pairgen --sweep 4e-3,2e-3,1e-3   # also screen at these tolerances
    python -m benchmarks.pairgen --tiny          # seconds: untrained tiny model, smoke of the path
    python -m benchmarks.pairgen --check-reference   # float32 vs float64 reference, then exit
    python -m benchmarks.pairgen --no-compile    # without the compile: true arm

(a) The seed recipe (``pairgen_base.seed_recipe``: torchdiffeq dopri5, rtol = atol = 1e-5,
batches of 256 kept in memory). (b) ``pairs.solver: {method: auto, tolerance: T, probe: P}``
through the product: ``storage.solver_choice.open_or_create_pairs`` screens solvers on the first
P noise draws of chunk 0 (``rf_core.solver_screen``) and creates the store with the choice, then
``storage.generate.generate_chunks`` fills it; eagerly, and with ``compile: true`` (which screens
the compiled model). T is the seed recipe's own pair error on the probe draws, so the choice is
the cheapest solver at least as accurate as the seed. All arms solve the same noise and labels (a
store's chunk inputs) and are interleaved (A, B, C, A, B, C, ...; medians). Errors are reported on
the probe draws and on the held-out pairs (all the others), which played no part in the choice.

Pair error is defined in ``rf_core.pair_error``. Efficiency = pairs/s * NFE / (model forward
images/s at the same batch, timed right after each solve under the same load): 1 means the
solver does nothing but model evaluations.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from benchmarks.common import (
    ROOT,
    interleave,
    machine_line,
    markdown_table,
    median,
    timed,
    write_section,
)
from benchmarks.pairgen_arms import (
    PairRow,
    auto_store,
    chosen_store,
    forward_inputs,
    interleaved,
    make_row,
    make_store,
    seed_arm,
    store_arm,
    store_inputs,
)
from benchmarks.pairgen_base import BENCH_TRAIN, MNIST_MODEL, SEED_SOLVER, TINY_MODEL, bench_model
from rf_core.compiled import CompileError
from rf_core.config import ModelConfig
from rf_core.pair_error import REFERENCE_TOL, pair_error, reference_solve, sample_errors
from rf_core.screen_result import Screen
from rf_core.solver_screen import screen_solvers
from rf_core.solver_spec import SolverSpec
from rf_core.solvers import solve_ode
from rf_core.training import checkpoint_sha256, load_checkpoint
from storage.generate import prepare_model
from storage.solver_choice import payoff_line, probe_inputs

# Pair counts the probe's cost is reported against: `make run`'s store and the image configs'.
COST_AT = (4096, 200_000)
COLUMNS = ["setting", "path", "batch", "nfe_per_pair", "pairs_per_s", "speedup", "probe_error"]
COLUMNS += ["held_out_error", "err_p50", "err_max", "efficiency"]


@dataclass(frozen=True)
class LeverRow:
    """Model forward throughput of one execution option, relative to the baseline."""

    option: str
    batch: int
    images_per_s: float
    vs_baseline: float


@dataclass(frozen=True)
class ScreenCost:
    """What one arm's screen cost, against generating ``COST_AT`` pairs with its choice.

    ``share_4096``/``share_200k``: the screen's wall time over the time generating that many
    pairs takes at the arm's measured pairs/s; ``evals_share_*`` the same in model evaluations.
    """

    arm: str
    chosen: str
    nfe: int
    screen_s: float
    compile_s: float
    evaluations: int
    share_4096: float
    share_200k: float
    evals_share_4096: float
    evals_share_200k: float


@dataclass(frozen=True)
class SweepRow:
    """One screen of the probe draws at ``tolerance``: what it chose and how that held up."""

    tolerance: float
    chosen: str
    nfe: int
    probe_error: float
    bound: float
    held_out_error: float
    fallback: bool


@dataclass
class PairgenResult:
    """Everything one benchmark run measured (the markdown section is rendered from it)."""

    n_pairs: int
    batch: int
    probe: int
    ref_dtype: str
    ref_nfe: int
    ref_seconds: float
    wiggle: float
    tolerance: float
    seed: PairRow
    auto: PairRow
    compiled: PairRow | None
    generation_compile_s: float | None
    costs: list[ScreenCost]
    payoff: list[str]
    screen: list[dict]
    sweep: list[SweepRow]
    deterministic: bool | None
    levers: list[LeverRow]
    rounds: list[dict]
    load: tuple[float, float]
    seconds: float


def screen_cost(arm: str, screen: Screen, seconds: float, rate: float) -> ScreenCost:
    """The cost of a screen that took ``seconds``, against generating at ``rate`` pairs/s."""
    nfe = screen.chosen_trial.nfe
    shares = [seconds / (n / rate) for n in COST_AT]
    evals = [screen.evaluations / (n * nfe) for n in COST_AT]
    label, compile_s, evaluations = (
        screen.chosen.label(),
        screen.compile_seconds,
        screen.evaluations,
    )
    return ScreenCost(arm, label, nfe, seconds, compile_s, evaluations, *shares, *evals)


def sweep_rows(model, x0, y, x1_ref, probe: int, batch: int, tolerances, log) -> list[SweepRow]:
    """Screen the probe draws at each tolerance; solve each choice on the held-out draws."""
    rows = []
    for tol in tolerances:
        req = SolverSpec(method="auto", tolerance=tol, probe=probe)
        screen = screen_solvers(model, x0[:probe], y[:probe], req, log=lambda line: None)
        won = screen.chosen_trial
        kw = screen.chosen.solve_kwargs() | {"batch_size": batch}
        held = solve_ode(model, x0[probe:], y[probe:], **kw).x1
        err = pair_error(held, x1_ref[probe:])
        label, fallback = won.solver.label(), screen.fallback
        rows.append(SweepRow(tol, label, won.nfe, won.error, won.bound, err, fallback))
        log(f"  sweep {tol:g}: {won.solver.label()} ({won.nfe} NFE), held out {err:.2e}")
    return rows


def _same_choice(screen: Screen, again: list[SweepRow]) -> bool | None:
    """Whether a second screen at the same tolerance chose the same with the same error."""
    won = screen.chosen_trial
    return (
        (again[0].chosen, again[0].probe_error) == (won.solver.label(), won.error)
        if again
        else None
    )


def auto_arms(model, cfg, root, n, request, sha, try_compile: bool, log):
    """The product's ``auto`` stores: eager, and with compile: true when asked and possible.

    Returns:
        {arm: (first store, its Screen, the screen's seconds, the model to generate with)} and
        the seconds of the generation graph's compilation (None without the compiled arm).
    """
    store, screen, sec = auto_store(root, "auto-0", n, request, model, cfg, sha, log)
    arms = {"auto": (store, screen, sec, model)}
    if not try_compile:
        return arms, None
    try:
        comp = request.model_copy(update={"compile": True})
        store, screen, sec = auto_store(root, "compiled-0", n, comp, model, cfg, sha, log)
        gen = prepare_model(model, store, "cpu")  # compiled at the generation batch
        with torch.inference_mode():  # inputs made here, as a solve makes them (graph guards)
            x, t, y = forward_inputs(cfg, request.batch_size)
            gen_s, _ = timed(lambda: gen(x, t, y))
    except CompileError as e:
        log(f"  compile unavailable: {e}")
        return arms, None
    log(f"  compiled at the generation batch {request.batch_size}: first call {gen_s:.0f} s")
    return arms | {"compiled": (store, screen, sec, gen)}, gen_s


def timed_arms(model, cfg, root, x0, y, arms, seed_bs, rounds, sha, log) -> dict[str, list]:
    """Interleave the seed recipe (in memory) and each auto arm through generate_chunks.

    Round 0 fills the screened stores; later rounds fresh stores with the same choice and record
    (the same bytes), so only generation is timed.
    """
    fns = {"seed": lambda r: seed_arm(model, cfg, x0, y, seed_bs)}
    for arm, (store, screen, _, gen) in arms.items():

        def fn(r, arm=arm, store=store, screen=screen, gen=gen):
            target = (
                store if r == 0 else chosen_store(root, f"{arm}-{r}", len(x0), screen, cfg, sha)
            )
            return store_arm(gen, cfg, target)

        fns[arm] = fn
    return interleaved(fns, rounds, log)


def arm_rows(out: dict[str, list], arms: dict, seed_bs: int, batch: int, x1_ref, probe) -> dict:
    """A PairRow per arm (medians over rounds, the errors of the last round's pairs); the seed's
    first, as the others' speedup is against it."""
    names = {"seed": "seed: dopri5 tol=1e-05"}
    names |= {
        a: f"auto → {s.chosen.label().replace('_compile', '')}" for a, (_, s, _, _) in arms.items()
    }
    if "compiled" in names:
        names["compiled"] += " + compile"
    rows: dict[str, PairRow] = {}
    for arm, got in out.items():
        seed = arm == "seed"
        path = "seed (memory)" if seed else "zarr (generate_chunks)"
        rate = 0.0 if seed else rows["seed"].pairs_per_s
        timings, x1, nfe = [g[0] for g in got], got[-1][1], got[-1][2]
        bs = seed_bs if seed else batch
        rows[arm] = make_row(names[arm], path, bs, nfe, timings, x1, x1_ref, rate, probe)
    return rows


def run(
    model: nn.Module,
    cfg: ModelConfig,
    n_pairs: int,
    batch: int,
    probe: int,
    rounds: int = 3,
    try_compile: bool = True,
    workdir: Path | None = None,
    sha: str = "unsaved",
    log=print,
    ref_dtype: torch.dtype = torch.float32,
    sweep: tuple[float, ...] = (),
) -> PairgenResult:
    """Reference, seed recipe, the product's ``auto`` at the seed's error, interleaved rounds.

    Args:
        model: the trained 1-RF velocity field (CPU, float32).
        cfg: its ModelConfig.
        n_pairs: pairs per arm (> ``probe``: the others are the held-out pairs).
        batch: samples per solve and per store chunk (>= ``probe``; the seed recipe solves
            batches of 256 as in the seed).
        probe: noise draws the screen measures solvers on (the first of chunk 0).
        rounds: interleaved timing rounds of every arm.
        try_compile: also run ``auto`` with ``compile: true``.
        workdir: where the Zarr stores go (a temp dir inside it, removed at the end; created).
        sha: the model checkpoint's sha256, recorded as the stores' source.
        log: progress printer.
        ref_dtype: dtype of the reference solve (float32, or float64 at 5x the CPU time).
        sweep: tolerances to screen the probe draws at (the choice, its NFE and its held-out
            error each); when given, the seed's tolerance is screened again (determinism).
    """
    start, load0, seed_bs = time.perf_counter(), os.getloadavg()[0], min(256, n_pairs)
    model.eval()
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        spec = SEED_SOLVER.model_copy(update={"batch_size": batch})
        x0, y = store_inputs(make_store(root, "inputs", n_pairs, spec, cfg, sha))
        request = SolverSpec(method="auto", probe=probe, batch_size=batch)
        shape, classes = cfg.data_shape, cfg.num_classes
        # What the screen will see: the first draws of the same noise (an identity, checked).
        assert x0[:probe].equal(probe_inputs(request, 0, batch, n_pairs, shape, classes)[0])
        ref_s, ref = timed(lambda: reference_solve(model, x0, y, batch_size=batch, dtype=ref_dtype))
        log(f"reference: {ref_dtype} dopri5 {REFERENCE_TOL:g}, {ref.nfe} NFE/pair, {ref_s:.0f} s")
        first = seed_arm(model, cfg, x0, y, seed_bs)
        tol = pair_error(first[1][:probe], ref.x1[:probe])
        log(f"seed recipe: {first[2]} NFE/pair, error {tol:.3e} on the probe draws: the tolerance")
        request = request.model_copy(update={"tolerance": tol})
        arms, gen_s = auto_arms(model, cfg, root, n_pairs, request, sha, try_compile, log)
        out = timed_arms(model, cfg, root, x0, y, arms, seed_bs, rounds, sha, log)
        rows = arm_rows(out, arms, seed_bs, batch, ref.x1, probe)
        costs = [screen_cost(a, s, sec, rows[a].pairs_per_s) for a, (_, s, sec, _) in arms.items()]
        screen = arms["auto"][1]
        tols = tuple(sorted({*sweep, tol}, reverse=True)) if sweep else ()
        swept = sweep_rows(model, x0, y, ref.x1, probe, batch, tols, log)
        same = _same_choice(screen, [r for r in swept if r.tolerance == tol])
        gen = arms["compiled"][3] if "compiled" in arms else None
        levers = measure_levers(model, cfg, batch, max(rounds, 2), gen)
    times = [{f"{a}_s": got[r][0].seconds for a, got in out.items()} for r in range(rounds)]
    return PairgenResult(
        n_pairs=n_pairs,
        batch=batch,
        probe=probe,
        ref_dtype=str(ref_dtype).removeprefix("torch."),
        ref_nfe=ref.nfe,
        ref_seconds=ref_s,
        wiggle=time_wiggle(model),
        tolerance=tol,
        seed=rows["seed"],
        auto=rows["auto"],
        compiled=rows.get("compiled"),
        generation_compile_s=gen_s,
        costs=costs,
        payoff=[payoff_line(screen, n, batch) for n in COST_AT],
        screen=screen.table(),
        sweep=swept,
        deterministic=same,
        levers=levers,
        rounds=[{"round": r, **t} for r, t in enumerate(times)],
        load=(load0, os.getloadavg()[0]),
        seconds=time.perf_counter() - start,
    )


def measure_levers(model, cfg: ModelConfig, batch: int, rounds: int, compiled) -> list[LeverRow]:
    """Forward images/s under the execution options that could speed up generation."""
    g = torch.Generator().manual_seed(2)

    def call(m, b, mode=torch.inference_mode, fmt=torch.contiguous_format):
        x = torch.randn((b, *cfg.data_shape), generator=g).to(memory_format=fmt)
        t, y = torch.rand(b, generator=g), torch.randint(0, max(cfg.num_classes, 1), (b,))

        def fn():
            with mode():
                return m(x, t, y)

        fn()  # warm-up
        return fn

    cl = torch.channels_last
    fns = {f"inference_mode, batch {batch}": call(model, batch)}
    fns[f"no_grad, batch {batch}"] = call(model, batch, torch.no_grad)
    fns[f"channels_last, batch {batch}"] = call(model.to(memory_format=cl), batch, fmt=cl)
    model.to(memory_format=torch.contiguous_format)
    for b in sorted({64, 256, 512} - {batch}):
        fns[f"inference_mode, batch {b}"] = call(model, b)
    if compiled is not None:  # rf_core.compiled: torch.compile, frozen weights, padded batch
        fns[f"torch.compile (frozen), batch {batch}"] = call(compiled, batch)
    times = interleave(fns, rounds)
    base = batch / median(next(iter(times.values())))
    rows = []
    for name, ts in times.items():
        b = int(name.rsplit(" ", 1)[1])
        rows.append(LeverRow(name, b, b / median(ts), b / median(ts) / base))
    return rows


def time_wiggle(model: nn.Module, n_t: int = 301, width: float = 0.03) -> float:
    """High-frequency content of the field along t: RMS of v minus its best quadratic in t.

    A smooth field is a quadratic over a window of ``width`` in t to ~1e-5; what is left is an
    oscillation (from the sinusoidal embedding of 1000 t) that fixed-step solvers alias.
    Measured on one noise sample in windows starting at t = 0.1, 0.5, 0.9.

    Returns:
        the residual's RMS over the RMS of v, averaged over the three windows.
    """
    cfg = model.config
    x = torch.randn((1, *cfg.data_shape), generator=torch.Generator().manual_seed(0))
    y = torch.full((n_t,), min(3, cfg.num_classes - 1) if cfg.num_classes > 0 else -1)
    out = []
    for t0 in (0.1, 0.5, 0.9):
        ts = t0 + torch.linspace(0.0, width, n_t)
        with torch.inference_mode():
            v = model(x.expand(n_t, *cfg.data_shape), ts, y).flatten(1).double()
        basis = torch.stack([torch.ones_like(ts), ts - t0, (ts - t0) ** 2], 1).double()
        resid = v - basis @ torch.linalg.lstsq(basis, v).solution
        out.append(float(resid.pow(2).mean().sqrt() / v.pow(2).mean().sqrt()))
    return sum(out) / len(out)


def reference_check(model: nn.Module, x0: Tensor, y: Tensor, batch: int) -> dict:
    """The float32 dopri5 1e-7 reference against the float64 one: error, NFE and seconds each."""
    kw = {"batch_size": batch}
    sec64, r64 = timed(lambda: reference_solve(model, x0, y, dtype=torch.float64, **kw))
    sec32, r32 = timed(lambda: reference_solve(model, x0, y, **kw))
    (ref64, nfe64), (ref32, nfe32) = (r64.x1, r64.nfe), (r32.x1, r32.nfe)
    errs = sample_errors(ref32, ref64)
    return {
        "pairs": len(x0),
        "float64": {"nfe": nfe64, "seconds": sec64},
        "float32": {"nfe": nfe32, "seconds": sec32},
        "float32_vs_float64": {
            "pair_error": pair_error(ref32, ref64),
            "err_p50": float(errs.median()),
            "err_max": float(errs.max()),
        },
        "field_time_wiggle": time_wiggle(model),
    }


def _choice(res: PairgenResult) -> list[str]:
    """The paragraphs naming the choice, how it held on held-out pairs, and what compile adds."""
    a, s = res.auto, res.seed
    no_worse = "no worse than" if a.held_out_error <= s.held_out_error else "worse than"
    lines = [
        f"**Choice**: `auto` at tolerance {res.tolerance:.3e} (the seed recipe's pair error on "
        f"the {res.probe} probe draws) chose **{a.setting.removeprefix('auto → ')}**: "
        f"{a.nfe_per_pair:g} NFE per pair against the seed's {s.nfe_per_pair:g}; on the "
        f"{res.n_pairs - res.probe} held-out pairs its error is {a.held_out_error:.2e}, "
        f"{no_worse} the seed's {s.held_out_error:.2e}; **{a.speedup:.2f}×** the seed's pairs/s "
        f"eagerly through `generate_chunks` into Zarr (efficiency {a.efficiency:.2f}, seed "
        f"{s.efficiency:.2f}).",
        "",
    ]
    if res.compiled is not None:
        c = res.compiled
        lines += [
            f"**With `compile: true`**: the compiled model's screen chose "
            f"{c.setting.removeprefix('auto → ').removesuffix(' + compile')}; **{c.speedup:.2f}×** "
            f"the seed's pairs/s ({c.pairs_per_s / a.pairs_per_s:.2f}× the eager arm), held-out "
            f"error {c.held_out_error:.2e}. Generation compiled its own graph at batch "
            f"{res.batch} (first call {res.generation_compile_s:.0f} s, not in the pairs/s; the "
            "screen's graph at the probe's batch is in its cost below).",
            "",
        ]
    return lines


def _sweep(res: PairgenResult) -> list[str]:
    if not res.sweep:
        return []
    same = {True: "the same choice and errors", False: "a DIFFERENT result"}[res.deterministic]
    return [
        "**Tolerance sweep** (the product's screen on the same probe draws at each tolerance; "
        "`held_out_error`: the chosen solver on the held-out draws, in memory):",
        "",
        markdown_table(res.sweep),
        "",
        f"Screening the seed's tolerance a second time gave {same} as the eager arm's screen.",
        "",
    ]


def render(res: PairgenResult, command: str, model_note: str, device: str = "cpu") -> str:
    """The BENCHMARKS.md ``pairgen`` section body for one run."""
    head = [r for r in (res.seed, res.auto, res.compiled) if r is not None]
    load = f"load average {res.load[0]:.1f} at the start, {res.load[1]:.1f} at the end"
    lines = [
        "## Pair generation: `pairs.solver: auto` vs the seed recipe",
        "",
        f"Command: `{command}` · {time.strftime('%Y-%m-%d')} · {machine_line(device)} · {load}",
        "",
        f"{model_note}. {res.n_pairs} pairs in chunks of {res.batch}, the same noise and labels "
        f"for every arm (a pair store's chunk inputs); the probe is the first {res.probe} draws "
        f"of chunk 0, what the product screens, and the other {res.n_pairs - res.probe} pairs "
        f"are held out. Reference dopri5 rtol=atol={REFERENCE_TOL:g} in {res.ref_dtype} "
        f"({res.ref_nfe} NFE/pair, {res.ref_seconds:.0f} s). Field wiggle along t (RMS of v "
        f"minus its best quadratic over windows of 0.03 in t, over RMS of v): {res.wiggle:.1e}. "
        "Pair error = RMS(x1 − x1_ref)/RMS(x1_ref) (`rf_core.pair_error`); err_p50/err_max: "
        "median/largest per-sample error of the held-out pairs. Efficiency = pairs/s × NFE / "
        "forward images/s at the same batch, the forwards timed right after each solve. Wall "
        f"time: {res.seconds:.0f} s.",
        "",
        f"**Head to head** ({len(res.rounds)} interleaved rounds, medians; the auto arms' pairs "
        "are written to Zarr stores by `generate_chunks` and read back for the errors):",
        "",
        markdown_table(head, COLUMNS),
        "",
        *_choice(res),
        "**The probe's cost** (screen wall time, its compilation included, over the time to "
        "generate 4,096 and 200,000 pairs at the arm's measured pairs/s; `evals_share`: the "
        "same in model evaluations):",
        "",
        markdown_table(res.costs),
        "",
        *[f"- {line}" for line in res.payoff],
        "",
        "**The screen** (eager arm; `bound` is what the rule compares with the tolerance):",
        "",
        markdown_table(res.screen),
        "",
        *_sweep(res),
        "**Levers** (model forward throughput, interleaved, medians):",
        "",
        markdown_table(res.levers),
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pairgen", description=__doc__)
    p.add_argument("--pairs", type=int, default=256, help="pairs per arm (default 256)")
    p.add_argument("--batch", type=int, default=None, help="samples per chunk (default: pairs)")
    p.add_argument("--probe", type=int, default=None, help="probe draws (default: the product's)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--sweep", type=_tolerances, default=(), help="tolerances, e.g. 4e-3,1e-3")
    p.add_argument("--train-steps", type=int, default=BENCH_TRAIN.steps)
    p.add_argument("--checkpoint", type=Path, default=None, help="use this 1-RF checkpoint")
    p.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="skip the compiled arm (needs a C++ compiler; ~30-60 s per compiled graph)",
    )
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (tiny model)")
    p.add_argument("--no-write", action="store_true", help="do not rewrite BENCHMARKS.md")
    p.add_argument("--check-reference", action="store_true", help="reference check, then exit")
    p.add_argument("--ref-dtype", choices=("float32", "float64"), default="float32")
    return p


def _tolerances(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _model(a: argparse.Namespace) -> tuple[nn.Module, Path, str]:
    """The benchmark's model, its checkpoint path and the sentence describing it."""
    if a.checkpoint is not None:
        model, payload = load_checkpoint(a.checkpoint)
        train = payload.get("train_config") or {}
        how = f", trained {train['steps']} steps × batch {train['batch_size']}" if train else ""
        return model.eval(), a.checkpoint, f"Model: checkpoint `{a.checkpoint.name}`{how}"
    cfg = TINY_MODEL if a.tiny else MNIST_MODEL
    train = BENCH_TRAIN.model_copy(update={"steps": 5 if a.tiny else a.train_steps})
    model, path = bench_model(cfg, train, a.cache_dir)
    note = (
        f"Model: class-conditional U-Net {cfg.base_channels}×{cfg.channel_mult}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, 1-RF trained "
        f"{train.steps} steps × batch {train.batch_size} on MNIST-5k (cached `{path.name}`)"
    )
    return model, path, note


def main(argv: list[str] | None = None) -> PairgenResult | dict:
    """CLI entry; see the module docstring."""
    p = _parser()
    a = p.parse_args(argv)
    batch = a.pairs if a.batch is None else a.batch
    probe = min(SolverSpec(method="auto").probe, batch // 2) if a.probe is None else a.probe
    if not 1 <= probe < a.pairs or probe > batch:
        p.error(
            f"need 1 <= --probe <= --batch and --probe < --pairs (the other pairs are held out), "
            f"got --probe {probe}, --batch {batch}, --pairs {a.pairs}"
        )
    a.cache_dir.mkdir(parents=True, exist_ok=True)  # the stores' temp dirs go inside it
    torch.manual_seed(0)
    model, path, note = _model(a)
    cfg = model.config
    if a.check_reference:
        with tempfile.TemporaryDirectory() as tmp:
            spec = SEED_SOLVER.model_copy(update={"batch_size": batch})
            x0, y = store_inputs(make_store(Path(tmp), "in", a.pairs, spec, cfg, "unsaved"))
        out = reference_check(model, x0, y, batch)
        print(json.dumps(out, indent=1))
        return out
    res = run(
        model, cfg, a.pairs, batch, probe, a.rounds, not a.no_compile, a.cache_dir,
        checkpoint_sha256(path), ref_dtype=getattr(torch, a.ref_dtype), sweep=a.sweep,
    )  # fmt: skip
    args = sys.argv[1:] if argv is None else argv
    cmd = "python -m benchmarks.pairgen" + (" " + " ".join(args) if args else "")
    body = render(res, cmd, note)
    print(body)
    (a.cache_dir / "pairgen.json").write_text(json.dumps(asdict(res), indent=1, default=str))
    if not (a.no_write or a.tiny):
        write_section("pairgen", body)
    return res


if __name__ == "__main__":
    main()
