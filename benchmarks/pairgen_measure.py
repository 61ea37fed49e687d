"""Pair generation benchmark, part 3: the measurements (screen, head to head, levers).

Timings on a shared machine swing several-fold with other jobs, so every timed solve is paired
with a block of plain model forwards (the same batch, as many calls as the solve's NFE, capped)
timed right after it: a row's efficiency is the ratio of the two, both taken under the same load.
The head to head interleaves the seed recipe and the default (A, B, A, B, ...) and reports medians.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from benchmarks.common import interleave, median, timed
from benchmarks.pairgen_core import (
    SEED_SOLVER,
    PairRow,
    Setting,
    candidates,
    choose_default,
    pair_error,
    reference_solve,
    sample_errors,
    seed_recipe,
    store_solver,
    time_wiggle,
)
from benchmarks.pairgen_setup import forward_inputs, forward_seconds, make_store, store_inputs
from rf_core.compiled import CompileError, compile_velocity
from rf_core.config import ModelConfig
from rf_core.solvers import solve_ode
from storage.generate import generate_chunks
from storage.pairstore import PairStore

# Forward calls timed next to each solve: enough to span the same load, capped to bound the cost.
MAX_FWD_CALLS = 24


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
    default_setting: Setting | None
    compiled: PairRow | None
    compile_seconds: float | None
    screen: list[PairRow]
    levers: list[LeverRow]
    rounds: list[dict]
    seconds: float


@dataclass(frozen=True)
class Timing:
    """One timed solve and the forward block timed next to it."""

    seconds: float
    efficiency: float


def timed_solve(fn, nfe_of, model: nn.Module, cfg: ModelConfig, n: int, batch: int):
    """Run ``fn()`` (a solve of ``n`` pairs), then time min(NFE, cap) forwards at ``batch``.

    Returns:
        (Timing, the solve's result); ``nfe_of(result)`` is its NFE per pair.
    """
    sec, out = timed(fn)
    nfe = nfe_of(out)
    calls = max(1, min(nfe, MAX_FWD_CALLS))
    fwd_rate = calls * batch / forward_seconds(model, cfg, batch, calls)
    return Timing(sec, (n / sec) * nfe / fwd_rate), out


def make_row(name, path, batch, nfe, n, timings, x1, x1_ref, seed_rate) -> PairRow:
    """A PairRow from the medians of ``timings`` and the errors of ``x1``."""
    rate = n / median([t.seconds for t in timings])
    errs = sample_errors(x1, x1_ref)
    return PairRow(
        name,
        path,
        batch,
        nfe,
        rate,
        rate / seed_rate if seed_rate else 1.0,
        pair_error(x1, x1_ref),
        float(errs.median()),
        float(errs.max()),
        median([t.efficiency for t in timings]),
    )


def screen_settings(model, cfg, x0, y, x1_ref, settings, batch, seed_rate, log) -> list[PairRow]:
    """Solve once per setting (in memory, solve_ode) for its pair error, NFE and speed."""
    rows = []
    for s in settings:
        timing, res = timed_solve(
            lambda s=s: solve_ode(model, x0, y, batch_size=batch, **s.solve_kwargs()),
            lambda r: r.nfe,
            model,
            cfg,
            len(x0),
            batch,
        )
        row = make_row(
            s.name, "solve_ode", batch, res.nfe, len(x0), [timing], res.x1, x1_ref, seed_rate
        )
        log(
            f"  {row.setting:<20} nfe={row.nfe_per_pair:<4} err={row.pair_error:.2e} "
            f"(p50 {row.err_p50:.1e}, max {row.err_max:.1e}) {row.pairs_per_s:.1f}/s "
            f"eff={row.efficiency:.2f}"
        )
        rows.append(row)
    return rows


def _generate_arm(model, cfg, root, name, n, batch, solver, sha):
    """One timed generate_chunks run into a fresh store; ``model`` may be a compiled one."""
    store = make_store(root, name, n, batch, cfg, solver, sha)
    store = PairStore.open(store.uri, mode="r+")
    timing, stats = timed_solve(
        lambda: generate_chunks(model, store),
        lambda st, chunks=store.n_chunks: round(st.nfe / chunks),  # one solve per chunk
        model,
        cfg,
        n,
        batch,
    )
    return timing, store, stats


def read_x1(store: PairStore) -> Tensor:
    """(n, *shape) x1 of every chunk of ``store``, read back through Zarr."""
    return torch.cat([torch.from_numpy(store.read_chunk(i)[1]) for i in range(store.n_chunks)])


def head_to_head(model, cfg, root, x0, y, best, batch, seed_bs, rounds, sha, log, compiled=None):
    """Interleave the seed recipe (in memory) and the default through generate_chunks into Zarr.

    With ``compiled`` (the model under rf_core.compiled, already warmed up), each round also
    generates with the default solver and ``compile: true``; its forwards for the efficiency are
    the compiled model's.

    Returns:
        seed timings, default timings, the seed's x1 and NFE, the default's x1 (read back from
        the last store) and NFE per pair, a per-round log, and the compiled arm's timings and x1
        (empty and None without ``compiled``).
    """
    n = len(x0)
    seed_t, gen_t, comp_t, cstore, log_rows = [], [], [], None, []
    for r in range(rounds):
        tm, (x1_seed, seed_nfe) = timed_solve(
            lambda: seed_recipe(model, x0, y, seed_bs), lambda o: o[1], model, cfg, n, seed_bs
        )
        seed_t.append(tm)
        solver = store_solver(best, batch)
        gm, store, stats = _generate_arm(model, cfg, root, f"default-{r}", n, batch, solver, sha)
        gen_t.append(gm)
        row = {"round": r, "seed_s": tm.seconds, "default_s": gm.seconds}
        msg = f"  round {r}: seed {tm.seconds:.1f} s (eff {tm.efficiency:.2f}), "
        msg += f"default {gm.seconds:.1f} s (eff {gm.efficiency:.2f})"
        if compiled is not None:
            solver = {**solver, "compile": True}
            cm, cstore, _ = _generate_arm(compiled, cfg, root, f"comp-{r}", n, batch, solver, sha)
            comp_t.append(cm)
            row["compiled_s"] = cm.seconds
            msg += f", compiled {cm.seconds:.1f} s (eff {cm.efficiency:.2f})"
        log_rows.append(row)
        log(msg)
    nfe = round(stats.nfe / store.n_chunks)
    x1_comp = read_x1(cstore) if cstore is not None else None  # the last round's store
    return seed_t, gen_t, x1_seed, seed_nfe, read_x1(store), nfe, log_rows, comp_t, x1_comp


def measure_levers(model, cfg: ModelConfig, batch: int, rounds: int, compiled, log):
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
        rate = b / median(ts)
        rows.append(LeverRow(name, b, rate, rate / base))
    return rows


def run(
    model: nn.Module,
    cfg: ModelConfig,
    n_pairs: int,
    batch: int,
    rounds: int = 3,
    settings: list[Setting] | None = None,
    try_compile: bool = True,
    workdir: Path | None = None,
    model_sha: str = "unsaved",
    log=print,
    ref_dtype: torch.dtype = torch.float32,
) -> PairgenResult:
    """Reference, screen ``settings``, pick the default, then time it against the seed recipe.

    Args:
        model: the trained 1-RF velocity field (CPU, float32).
        cfg: its ModelConfig.
        n_pairs: pairs per measurement (all settings solve the same ``n_pairs`` noise draws).
        batch: samples per solve (the seed recipe uses batches of 256 as in the seed; with
            fewer pairs than 256 that is one batch of all ``n_pairs``).
        rounds: interleaved timing rounds of the seed recipe vs the default (A, B, A, B, ...).
        settings: candidates to screen; default :func:`candidates`.
        try_compile: also time the default with ``compile: true`` (rf_core.compiled) in the
            head to head and the compiled forward among the levers.
        workdir: where the Zarr stores go (a temp dir inside it, removed at the end).
        model_sha: the model checkpoint's sha256, recorded as the stores' source.
        log: progress printer.
        ref_dtype: dtype of the reference solve (float32, or float64 at 5x the CPU time).
    """
    start = time.perf_counter()
    settings = candidates() if settings is None else settings
    model.eval()
    seed_bs = min(256, n_pairs)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp)
        inputs = make_store(root, "inputs", n_pairs, batch, cfg, {**SEED_SOLVER}, model_sha)
        x0, y = store_inputs(inputs)
        ref_s, (x1_ref, ref_nfe) = timed(
            lambda: reference_solve(model, x0, y, batch_size=batch, dtype=ref_dtype)
        )
        log(f"reference: {ref_dtype} dopri5 1e-7, {ref_nfe} NFE/pair, {ref_s:.0f} s")
        tm, (x1_seed, seed_nfe) = timed_solve(
            lambda: seed_recipe(model, x0, y, seed_bs), lambda o: o[1], model, cfg, n_pairs, seed_bs
        )
        seed_err = pair_error(x1_seed, x1_ref)
        log(f"seed recipe: nfe={seed_nfe} err={seed_err:.2e} in {tm.seconds:.1f} s")
        screen = screen_settings(
            model, cfg, x0, y, x1_ref, settings, batch, n_pairs / tm.seconds, log
        )
        _, best = choose_default(screen, settings, seed_err)
        seed_t, default_row, comp_row, round_log = [tm], None, None, []
        compiled, comp_s = warm_compiled(model, cfg, batch, log) if try_compile else (None, None)
        if best is not None:
            log(f"default: {best.name}; timing it through a Zarr store vs the seed recipe")
            seed_t, gen_t, x1_seed, seed_nfe, x1_def, nfe, round_log, comp_t, x1_comp = (
                head_to_head(
                    model, cfg, root, x0, y, best, batch, seed_bs, rounds, model_sha, log, compiled
                )
            )
        seed_row = make_row(
            "seed: dopri5 tol=1e-05", "seed (memory)", seed_bs, seed_nfe, n_pairs, seed_t,
            x1_seed, x1_ref, 0.0,
        )  # fmt: skip
        if best is not None:
            default_row = make_row(
                best.name, "zarr (generate_chunks)", batch, nfe, n_pairs, gen_t, x1_def, x1_ref,
                seed_row.pairs_per_s,
            )  # fmt: skip
        if comp_t:
            comp_row = make_row(
                f"{best.name} + compile", "zarr (generate_chunks)", batch, nfe, n_pairs, comp_t,
                x1_comp, x1_ref, seed_row.pairs_per_s,
            )  # fmt: skip
        levers = measure_levers(model, cfg, batch, max(rounds, 2), compiled, log)
    dtype_name = str(ref_dtype).removeprefix("torch.")
    return PairgenResult(
        n_pairs, batch, dtype_name, ref_nfe, ref_s, time_wiggle(model), seed_row, default_row,
        best, comp_row, comp_s, screen, levers, round_log, time.perf_counter() - start,
    )  # fmt: skip


def warm_compiled(model: nn.Module, cfg: ModelConfig, batch: int, log):
    """The model compiled as generation compiles it, after its first (compiling) call.

    Returns:
        (compiled model, seconds of the first call), or (None, None) when compilation fails (no
        C++ compiler): the benchmark then reports the eager default only.
    """
    compiled = compile_velocity(model, batch)
    try:
        with torch.inference_mode():
            # Inputs made under inference_mode, as a solve makes them: a compiled graph guards
            # on it, and a warm-up with ordinary tensors left a second compilation to round 0.
            x, t, y = forward_inputs(cfg, batch)
            sec, _ = timed(lambda: compiled(x, t, y))
    except CompileError as e:
        log(f"  compile unavailable: {e}")
        return None, None
    log(f"  torch.compile (frozen weights, batch {batch}): first call {sec:.0f} s")
    return compiled, sec


def reference_check(model: nn.Module, x0: Tensor, y: Tensor, batch: int) -> dict:
    """The float32 dopri5 1e-7 reference against the float64 one: error, NFE and seconds each."""
    sec64, (ref64, nfe64) = timed(
        lambda: reference_solve(model, x0, y, batch_size=batch, dtype=torch.float64)
    )
    sec32, (ref32, nfe32) = timed(lambda: reference_solve(model, x0, y, batch_size=batch))
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
