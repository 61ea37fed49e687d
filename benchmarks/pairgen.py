"""Pair generation: the seed recipe vs rectiflow's generator, side by side on one trained model.

    python -m benchmarks.pairgen                 # CPU run that rewrites BENCHMARKS.md's section
    python -m benchmarks.pairgen --tiny          # seconds: untrained tiny model, smoke of the path
    python -m benchmarks.pairgen --checkpoint runs/checkpoints/<1-RF>.pt   # a pipeline's model
    python -m benchmarks.pairgen --check-reference   # float32 vs float64 reference, then exit
    python -m benchmarks.pairgen --no-compile    # without the compile: true arm

(a) the seed recipe (``pairgen_base.seed_recipe``: torchdiffeq dopri5, rtol = atol = 1e-5,
batches of 256 kept in memory); (b) candidate solver specs (``rf_core.solver_spec.SolverSpec``:
fixed-step methods on time grids, looser adaptive ones), screened in memory with ``solve_ode``.
The chosen default is then timed through ``storage.generate.generate_chunks`` into a real Zarr
pair store, interleaved with (a), eagerly and with ``compile: true`` (its one-off compilation is
timed apart). All use the same noise and labels (a store's chunk inputs). The default is chosen
on the errors of the first half of the pairs; ``held_out_error`` is the error on the other half.

Pair error is defined in ``benchmarks.pairgen_base``. Efficiency = pairs/s * NFE / (model
forward images/s at the same batch, timed right after each solve under the same load): 1 means
the solver does nothing but model evaluations. Timings on a shared machine swing several-fold,
so the head to head interleaves the arms (A, B, A, B, ...) and reports medians.
"""

from __future__ import annotations

import argparse
import json
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
from benchmarks.pairgen_base import (
    BENCH_TRAIN,
    MNIST_MODEL,
    SEED_SOLVER,
    TINY_MODEL,
    bench_model,
    seed_recipe,
)
from rf_core.compiled import CompileError, compile_velocity
from rf_core.config import ModelConfig
from rf_core.pair_error import REFERENCE_TOL, pair_error, reference_solve, sample_errors
from rf_core.solver_spec import SolverSpec
from rf_core.solvers import solve_ode
from rf_core.training import checkpoint_sha256, load_checkpoint
from storage.generate import chunk_inputs, generate_chunks
from storage.pairstore import PairStore

MAX_FWD_CALLS = 24  # forwards timed next to each solve: spans the same load, bounds the cost
COLUMNS = ["setting", "path", "batch", "nfe_per_pair", "pairs_per_s", "speedup", "pair_error"]
COLUMNS += ["held_out_error", "err_p50", "err_max", "efficiency"]


def candidates() -> list[SolverSpec]:
    """Specs screened against the reference: fixed-step solvers x step counts x grids.

    rk4 on the uniform grid and on the ends grid (rho=1.5) that led earlier screens at 6-10 steps
    (the "end" and "cosine" grids and heun2 never led, so they are left out to keep the CPU run
    short); midpoint at about rk4's NFE; dopri5 looser than the seed. In NFE order per family.
    """
    out = [SolverSpec(method="midpoint", steps=n) for n in (16, 24, 32)]
    out += [SolverSpec(method="rk4", steps=n) for n in (5, 6, 8, 10, 12, 14, 16)]
    out += [SolverSpec(method="rk4", steps=n, grid="ends", rho=1.5) for n in (6, 8, 12)]
    return out + [SolverSpec(method="dopri5", rtol=t, atol=t) for t in (1e-3, 1e-4)]


def tiny_settings() -> list[SolverSpec]:
    """A handful of specs for the smoke run."""
    rk4 = [SolverSpec(method="rk4", steps=4, grid=g) for g in ("uniform", "cosine")]
    return [SolverSpec(method="euler", steps=4), *rk4, SolverSpec(rtol=1e-3, atol=1e-3)]


@dataclass(frozen=True)
class PairRow:
    """One measured setting. ``path``: seed (in memory) | solve_ode | zarr (generate_chunks).

    ``pair_error``: on the first half of the pairs (the default is chosen on it);
    ``held_out_error``: on the second half. ``err_p50``/``err_max``: median and largest
    per-sample error of the first half, to see whether a few samples dominate ``pair_error``.
    """

    setting: str
    path: str
    batch: int
    nfe_per_pair: float
    pairs_per_s: float
    speedup: float
    pair_error: float
    held_out_error: float
    err_p50: float
    err_max: float
    efficiency: float


@dataclass(frozen=True)
class LeverRow:
    """Model forward throughput of one execution option, relative to the baseline."""

    option: str
    batch: int
    images_per_s: float
    vs_baseline: float


@dataclass
class PairgenResult:
    """Everything one benchmark run measured (the markdown section is rendered from it)."""

    n_pairs: int
    batch: int
    ref_dtype: str
    ref_nfe: int
    ref_seconds: float
    wiggle: float
    seed: PairRow
    default: PairRow | None
    default_setting: SolverSpec | None
    compiled: PairRow | None
    compile_seconds: float | None
    screen: list[PairRow]
    levers: list[LeverRow]
    rounds: list[dict]
    seconds: float


@dataclass(frozen=True)
class Timing:
    """One timed solve and the efficiency of the forward block timed next to it."""

    seconds: float
    efficiency: float


def forward_inputs(cfg: ModelConfig, batch: int, seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """Random (x, t, y) of ``batch`` samples for timing model forwards."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *cfg.data_shape), generator=g)
    t, y = torch.rand(batch, generator=g), torch.randint(0, max(cfg.num_classes, 1), (batch,))
    return x, t, y


def timed_solve(fn, nfe_of, model: nn.Module, cfg: ModelConfig, n: int, batch: int):
    """Run ``fn()`` (a solve of ``n`` pairs), then time min(NFE, cap) forwards at ``batch``.

    The forwards run as one block under inference_mode (inputs made there, like a solve's: a
    compiled graph guards on it), after one warm-up call.

    Returns:
        (Timing, the solve's result); ``nfe_of(result)`` is its NFE per pair.
    """
    sec, out = timed(fn)
    calls = max(1, min(nfe_of(out), MAX_FWD_CALLS))
    with torch.inference_mode():
        x, t, y = forward_inputs(cfg, batch)
        model(x, t, y)
        fwd_s = timed(lambda: [model(x, t, y) for _ in range(calls)])[0]
    return Timing(sec, (n / sec) * nfe_of(out) / (calls * batch / fwd_s)), out


def make_row(name, path, batch, nfe, timings, x1, x1_ref, seed_rate) -> PairRow:
    """A PairRow from the medians of ``timings`` and the errors of ``x1`` (both halves)."""
    half = len(x1) // 2
    rate = len(x1) / median([t.seconds for t in timings])
    errs = sample_errors(x1[:half], x1_ref[:half])
    speedup = rate / seed_rate if seed_rate else 1.0  # the seed's own row: 1
    choice, held_out = pair_error(x1[:half], x1_ref[:half]), pair_error(x1[half:], x1_ref[half:])
    return PairRow(
        name,
        path,
        batch,
        nfe,
        rate,
        speedup,
        choice,
        held_out,
        float(errs.median()),
        float(errs.max()),
        median([t.efficiency for t in timings]),
    )


def make_store(root: Path, name: str, n: int, solver: SolverSpec, cfg: ModelConfig, sha: str):
    """A fresh Zarr pair store (chunks of one solve batch) of the benchmark's noise and labels."""
    return PairStore.create(
        str(root / f"{name}.zarr"),
        n=n,
        chunk=solver.batch_size,
        sample_shape=cfg.data_shape,
        seed=0,
        source={"model_id": "bench", "model_uri": "bench", "checkpoint_sha256": sha, "k": 1},
        solver=solver,
        dataset="mnist5k",
        num_classes=cfg.num_classes,
    )


def store_inputs(store: PairStore) -> tuple[Tensor, Tensor]:
    """All noise and labels of a store, in order: the inputs every setting is solved from."""
    parts = [chunk_inputs(store, i) for i in range(store.n_chunks)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def read_x1(store: PairStore) -> Tensor:
    """(n, *shape) x1 of every chunk of ``store``, read back through Zarr."""
    return torch.cat([torch.from_numpy(store.read_chunk(i)[1]) for i in range(store.n_chunks)])


def screen_settings(model, cfg, x0, y, x1_ref, settings, batch, seed_rate, log) -> list[PairRow]:
    """Solve once per spec (in memory, solve_ode, batches of ``batch``) for its pair error, NFE
    and speed."""
    rows = []
    for s in settings:
        kw = s.solve_kwargs()
        timing, res = timed_solve(
            lambda kw=kw: solve_ode(model, x0, y, **kw), lambda r: r.nfe, model, cfg, len(x0), batch
        )
        row = make_row(s.label(), "solve_ode", batch, res.nfe, [timing], res.x1, x1_ref, seed_rate)
        log(
            f"  {row.setting:<20} nfe={row.nfe_per_pair:<4} err={row.pair_error:.2e} "
            f"(held out {row.held_out_error:.2e}) {row.pairs_per_s:.1f}/s eff={row.efficiency:.2f}"
        )
        rows.append(row)
    return rows


def choose_default(screen: list[PairRow], settings: list[SolverSpec], max_error: float):
    """The cheapest setting within ``max_error``: fewest NFE per pair, then the fastest."""
    ok = [(row, s) for row, s in zip(screen, settings, strict=True) if row.pair_error <= max_error]
    if not ok:
        return None, None
    return min(ok, key=lambda rs: (rs[0].nfe_per_pair, -rs[0].pairs_per_s))


def seed_arm(model, cfg, x0, y, seed_bs):
    """One timed seed-recipe solve (in memory): (Timing, x1, NFE per pair)."""
    n = len(x0)
    fn = lambda: seed_recipe(model, x0, y, seed_bs)  # noqa: E731
    tm, (x1, nfe) = timed_solve(fn, lambda out: out[1], model, cfg, n, seed_bs)
    return tm, x1, nfe


def store_arm(model, cfg, root, name, n, spec, sha):
    """One timed generate_chunks run into a fresh store of ``n`` pairs: (Timing, x1 read back
    from Zarr, NFE per pair). ``model`` may be a compiled one (``spec.compile``)."""
    store = make_store(root, name, n, spec, cfg, sha)
    k = store.n_chunks  # one solve per chunk
    fn = lambda: generate_chunks(model, store)  # noqa: E731
    tm, stats = timed_solve(fn, lambda st: round(st.nfe / k), model, cfg, n, spec.batch_size)
    return tm, read_x1(store), round(stats.nfe / k)


def head_to_head(model, cfg, root, x0, y, best, seed_bs, rounds, sha, log, compiled=None):
    """Interleave the seed recipe (in memory) and ``best`` through generate_chunks into Zarr.

    With ``compiled`` (the model under rf_core.compiled, already warmed up), each round also
    generates with ``best`` and ``compile: true``; its forwards for the efficiency are the
    compiled model's. Every arm solves the same noise (a fresh store per round and arm).

    Returns:
        {arm: [(Timing, x1, NFE per pair) per round]} for arms "seed", "default", "compiled".
    """
    n = len(x0)
    arms = {
        "seed": lambda r: seed_arm(model, cfg, x0, y, seed_bs),
        "default": lambda r: store_arm(model, cfg, root, f"default-{r}", n, best, sha),
    }
    if compiled is not None:
        spec = best.model_copy(update={"compile": True})
        arms["compiled"] = lambda r: store_arm(compiled, cfg, root, f"comp-{r}", n, spec, sha)
    out: dict[str, list] = {arm: [] for arm in arms}
    for r in range(rounds):
        for arm, fn in arms.items():
            out[arm].append(fn(r))
        parts = [
            f"{a} {o[-1][0].seconds:.1f} s (eff {o[-1][0].efficiency:.2f})" for a, o in out.items()
        ]
        log(f"  round {r}: " + ", ".join(parts))
    return out


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


def warm_compiled(model: nn.Module, cfg: ModelConfig, batch: int, log):
    """The model compiled as generation compiles it, after its first (compiling) call.

    Returns:
        (compiled model, seconds of the first call), or (None, None) when compilation fails (no
        C++ compiler): the benchmark then reports the eager default only.
    """
    compiled = compile_velocity(model, batch)
    try:
        with torch.inference_mode():  # inputs made here, as a solve makes them (graph guards)
            x, t, y = forward_inputs(cfg, batch)
            sec, _ = timed(lambda: compiled(x, t, y))
    except CompileError as e:
        log(f"  compile unavailable: {e}")
        return None, None
    log(f"  torch.compile (frozen weights, batch {batch}): first call {sec:.0f} s")
    return compiled, sec


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


def arm_rows(arms: dict[str, list], best, seed_bs: int, batch: int, x1_ref) -> dict:
    """A PairRow per arm of :func:`head_to_head` (medians over rounds, the errors of the last
    round's pairs); the seed's first, as the others' speedup is against it."""
    names = {"seed": "seed: dopri5 tol=1e-05"}
    if best is not None:
        names |= {"default": best.label(), "compiled": f"{best.label()} + compile"}
    rows: dict[str, PairRow] = {}
    for arm, got in arms.items():
        seed = arm == "seed"
        path = "seed (memory)" if seed else "zarr (generate_chunks)"
        rate = 0.0 if seed else rows["seed"].pairs_per_s
        timings, x1, nfe = [g[0] for g in got], got[-1][1], got[-1][2]
        rows[arm] = make_row(
            names[arm], path, seed_bs if seed else batch, nfe, timings, x1, x1_ref, rate
        )
    return rows


def run(
    model: nn.Module,
    cfg: ModelConfig,
    n_pairs: int,
    batch: int,
    rounds: int = 3,
    settings: list[SolverSpec] | None = None,
    try_compile: bool = True,
    workdir: Path | None = None,
    sha: str = "unsaved",
    log=print,
    ref_dtype: torch.dtype = torch.float32,
) -> PairgenResult:
    """Reference, screen ``settings``, pick the default, then time it against the seed recipe.

    Args:
        model: the trained 1-RF velocity field (CPU, float32).
        cfg: its ModelConfig.
        n_pairs: pairs per measurement (>= 2: every setting solves the same noise draws, the
            default is chosen on the first half and checked on the second).
        batch: samples per solve (the seed recipe uses batches of 256 as in the seed; with
            fewer pairs than 256 that is one batch of all ``n_pairs``).
        rounds: interleaved timing rounds of the seed recipe vs the default.
        settings: specs to screen (their batch_size is replaced by ``batch``); default
            :func:`candidates`.
        try_compile: also time the default with ``compile: true`` and the compiled forward.
        workdir: where the Zarr stores go (a temp dir inside it, removed at the end; created).
        sha: the model checkpoint's sha256, recorded as the stores' source.
        log: progress printer.
        ref_dtype: dtype of the reference solve (float32, or float64 at 5x the CPU time).
    """
    start = time.perf_counter()
    settings = [s.model_copy(update={"batch_size": batch}) for s in settings or candidates()]
    model.eval()
    seed_bs = min(256, n_pairs)
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        seed_spec = SEED_SOLVER.model_copy(update={"batch_size": batch})
        x0, y = store_inputs(make_store(root, "inputs", n_pairs, seed_spec, cfg, sha))
        ref_s, ref = timed(lambda: reference_solve(model, x0, y, batch_size=batch, dtype=ref_dtype))
        x1_ref, ref_nfe = ref.x1, ref.nfe
        log(f"reference: {ref_dtype} dopri5 {REFERENCE_TOL:g}, {ref_nfe} NFE/pair, {ref_s:.0f} s")
        first = seed_arm(model, cfg, x0, y, seed_bs)
        seed_err = make_row("seed", "seed", seed_bs, first[2], [first[0]], first[1], x1_ref, 0)
        log(
            f"seed recipe: nfe={first[2]} err={seed_err.pair_error:.2e} in {first[0].seconds:.1f} s"
        )
        rate = seed_err.pairs_per_s
        screen = screen_settings(model, cfg, x0, y, x1_ref, settings, batch, rate, log)
        _, best = choose_default(screen, settings, seed_err.pair_error)
        compiled, comp_s = warm_compiled(model, cfg, batch, log) if try_compile else (None, None)
        arms = {"seed": [first]}
        if best is not None:
            log(f"default: {best.label()}; timing it through a Zarr store vs the seed recipe")
            arms = head_to_head(model, cfg, root, x0, y, best, seed_bs, rounds, sha, log, compiled)
        rows = arm_rows(arms, best, seed_bs, batch, x1_ref)
        round_log = [
            {"round": r, **{f"{a}_s": got[r][0].seconds for a, got in arms.items()}}
            for r in range(len(arms["seed"]) if best is not None else 0)
        ]
        levers = measure_levers(model, cfg, batch, max(rounds, 2), compiled)
    return PairgenResult(
        n_pairs,
        batch,
        str(ref_dtype).removeprefix("torch."),
        ref_nfe,
        ref_s,
        time_wiggle(model),
        rows["seed"],
        rows.get("default"),
        best,
        rows.get("compiled"),
        comp_s,
        screen,
        levers,
        round_log,
        time.perf_counter() - start,
    )


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
    """The paragraphs naming the chosen default, why, and what compiling it adds."""
    if res.default is None:
        return ["No screened setting reached the seed's own pair error.", ""]
    spec = res.default_setting  # as a config would write it: the non-default fields
    solver = {"method": spec.method, **spec.model_dump(exclude_defaults=True, exclude={"method"})}
    solver.pop("batch_size", None)
    d, s = res.default, res.seed
    lines = [
        f"**Chosen default**: `{json.dumps(solver)}` — the "
        "fewest NFE per pair (then the fastest) among the screened settings whose pair error is ≤ "
        f"the seed recipe's {s.pair_error:.2e} in this run (on the first half of the pairs; on "
        f"the held-out half: {d.held_out_error:.2e} vs the seed's {s.held_out_error:.2e}); "
        f"{d.speedup:.1f}× the seed's pairs/s at efficiency {d.efficiency:.2f} (seed: "
        f"{s.efficiency:.2f}).",
        "",
    ]
    if res.compiled is not None:
        c = res.compiled
        saved = 1 / d.pairs_per_s - 1 / c.pairs_per_s  # seconds saved per pair
        pays = (
            f"pays for itself after {res.compile_seconds / saved:,.0f} pairs"
            if saved > 0
            else "never pays for itself here"
        )
        lines += [
            f"**With `compile: true`**: {c.speedup:.1f}× the seed's pairs/s "
            f"({c.pairs_per_s / d.pairs_per_s:.2f}× the eager default), pair error "
            f"{c.pair_error:.2e}, efficiency {c.efficiency:.2f} against the compiled model's own "
            f"forwards. The one-off compilation took {res.compile_seconds:.0f} s in this process "
            f"(not in the pairs/s; torch caches it across runs), so it {pays}.",
            "",
        ]
    return lines


def render(res: PairgenResult, command: str, model_note: str, device: str = "cpu") -> str:
    """The BENCHMARKS.md ``pairgen`` section body for one run."""
    head = [res.seed] + [r for r in (res.default, res.compiled) if r is not None]
    lines = [
        "## Pair generation: seed recipe vs rectiflow",
        "",
        f"Command: `{command}` · {time.strftime('%Y-%m-%d')} · {machine_line(device)}",
        "",
        f"{model_note}. {res.n_pairs} pairs, the same noise and labels for every setting (a pair "
        f"store's chunk inputs); reference dopri5 rtol=atol={REFERENCE_TOL:g} in {res.ref_dtype} "
        f"({res.ref_nfe} NFE/pair, {res.ref_seconds:.0f} s). Field wiggle along t (RMS of v "
        f"minus its best quadratic over windows of 0.03 in t, over RMS of v): {res.wiggle:.1e}. "
        "Pair error = RMS(x1 − x1_ref)/RMS(x1_ref) on the first half of the pairs (the default "
        "is chosen on it), held_out_error the same on the second half; err_p50/err_max: "
        "median/largest per-sample error of the first half on the same scale. Efficiency = "
        "pairs/s × NFE / forward images/s at the same batch, the forwards timed right after each "
        f"solve (median over rounds). Wall time: {res.seconds:.0f} s.",
        "",
        f"**Head to head** ({len(res.rounds) or 1} interleaved rounds, medians; the default's "
        "pairs are written to a Zarr store by `generate_chunks` and read back for the error):",
        "",
        markdown_table(head, COLUMNS),
        "",
        *_choice(res),
    ]
    if res.n_pairs < 256:
        lines += [
            f"The seed recipe solves batches of 256; with {res.n_pairs} pairs that is one batch "
            f"of all {res.seed.batch} (as are the screen's solves: batch {res.batch}).",
            "",
        ]
    lines += [
        "**Screen** (one in-memory `solve_ode` run per setting; speedup vs the seed's first run):",
        "",
        markdown_table(res.screen, COLUMNS),
        "",
        "**Levers** (model forward throughput, interleaved, medians):",
        "",
        markdown_table(res.levers),
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pairgen", description=__doc__)
    # 256 pairs = one seed-recipe batch of 256. Fewer pairs let one hard sample dominate the
    # RMS pair error (see err_max).
    p.add_argument("--pairs", type=int, default=256, help="pairs per setting (default 256)")
    p.add_argument("--batch", type=int, default=None, help="samples per solve (default: pairs)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--train-steps", type=int, default=BENCH_TRAIN.steps)
    p.add_argument("--checkpoint", type=Path, default=None, help="use this 1-RF checkpoint")
    p.add_argument("--cache-dir", type=Path, default=ROOT / "runs" / "bench")
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="skip the compiled arm (needs a C++ compiler; ~30-60 s first call)",
    )
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (tiny model)")
    p.add_argument("--no-write", action="store_true", help="do not rewrite BENCHMARKS.md")
    p.add_argument("--check-reference", action="store_true", help="reference check, then exit")
    p.add_argument("--ref-dtype", choices=("float32", "float64"), default="float32")
    return p


def _model(a: argparse.Namespace) -> tuple[nn.Module, Path, str]:
    """The benchmark's model, its checkpoint path and the sentence describing it."""
    if a.checkpoint is not None:
        model, _ = load_checkpoint(a.checkpoint)
        return model.eval(), a.checkpoint, f"Model: checkpoint {a.checkpoint}"
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
    if a.pairs < 2 or (a.batch is not None and a.batch < 1):
        p.error(
            f"--pairs and --batch must be >= 2 and >= 1 (half the pairs choose the default, "
            f"the other half is held out), got {a.pairs} and {a.batch}"
        )
    a.cache_dir.mkdir(parents=True, exist_ok=True)  # the stores' temp dirs go inside it
    torch.manual_seed(0)
    model, path, note = _model(a)
    cfg, batch = model.config, a.batch or a.pairs
    if a.check_reference:
        with tempfile.TemporaryDirectory() as tmp:
            spec = SEED_SOLVER.model_copy(update={"batch_size": batch})
            x0, y = store_inputs(make_store(Path(tmp), "in", a.pairs, spec, cfg, "unsaved"))
        out = reference_check(model, x0, y, batch)
        print(json.dumps(out, indent=1))
        return out
    res = run(
        model,
        cfg,
        a.pairs,
        batch,
        a.rounds,
        tiny_settings() if a.tiny else None,
        not a.no_compile,
        a.cache_dir,
        checkpoint_sha256(path),
        ref_dtype=getattr(torch, a.ref_dtype),
    )
    args = sys.argv[1:] if argv is None else argv
    cmd = "python -m benchmarks.pairgen" + (" " + " ".join(args) if args else "")
    body = render(res, cmd, note)
    print(body)
    (a.cache_dir / "pairgen.json").write_text(json.dumps(asdict(res), indent=1, default=str))
    write = not (a.no_write or a.tiny)
    if write:
        write_section("pairgen", body)
    return res


if __name__ == "__main__":
    main()
