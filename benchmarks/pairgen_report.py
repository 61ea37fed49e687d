"""Pair generation benchmark, part 4: the BENCHMARKS.md section rendered from a result."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

from benchmarks.common import machine_line, markdown_table
from benchmarks.pairgen_core import REF_TOL, store_solver
from benchmarks.pairgen_measure import PairgenResult

COLUMNS = [
    "setting",
    "path",
    "batch",
    "nfe_per_pair",
    "pairs_per_s",
    "speedup",
    "pair_error",
    "err_p50",
    "err_max",
    "efficiency",
]


def _choice(res: PairgenResult) -> list[str]:
    """The paragraph naming the chosen default and why."""
    if res.default is None:
        return ["No screened setting reached the seed's own pair error.", ""]
    solver = store_solver(res.default_setting, res.batch)
    solver.pop("batch_size")
    return [
        f"**Chosen default**: `{json.dumps(solver)}` — the fewest NFE per pair (then the fastest) "
        f"among the screened settings whose pair error is ≤ the seed recipe's "
        f"{res.seed.pair_error:.2e} in this run; {res.default.speedup:.1f}× the seed's pairs/s "
        f"at efficiency {res.default.efficiency:.2f} (seed: {res.seed.efficiency:.2f}).",
        "",
        *_compiled(res),
    ]


def _compiled(res: PairgenResult) -> list[str]:
    """The paragraph on the default with ``compile: true``, if it was measured."""
    if res.compiled is None:
        return []
    eager, comp = res.default.pairs_per_s, res.compiled.pairs_per_s
    saved = 1 / eager - 1 / comp  # seconds saved per pair
    pays = (
        f"pays for itself after {res.compile_seconds / saved:,.0f} pairs"
        if saved > 0
        else ("never pays for itself here")
    )
    return [
        f"**With `compile: true`** (the recommended setting for image models): "
        f"{res.compiled.speedup:.1f}× the seed's pairs/s ({comp / eager:.2f}× the eager "
        f"default), pair error {res.compiled.pair_error:.2e}, efficiency "
        f"{res.compiled.efficiency:.2f} against the compiled model's own forwards. The one-off "
        f"compilation took {res.compile_seconds:.0f} s in this process (not in the pairs/s; "
        f"torch caches it across runs), so it {pays}.",
        "",
    ]


def render(res: PairgenResult, command: str, model_note: str, device: str = "cpu") -> str:
    """The BENCHMARKS.md section body for one run."""
    head = [res.seed] + [r for r in (res.default, res.compiled) if r is not None]
    lines = [
        "## Pair generation: seed recipe vs rectiflow (issue 6)",
        "",
        f"Command: `{command}` · {time.strftime('%Y-%m-%d')} · {machine_line(device)}",
        "",
        f"{model_note}. {res.n_pairs} pairs, the same noise and labels for every setting (a pair "
        f"store's chunk inputs); reference dopri5 rtol=atol={REF_TOL:g} in {res.ref_dtype} "
        f"({res.ref_nfe} NFE/pair, {res.ref_seconds:.0f} s). Field wiggle along t (RMS of v "
        f"minus its best quadratic over windows of 0.03 in t, over RMS of v): {res.wiggle:.1e}. "
        f"Pair error = RMS(x1 − x1_ref)/"
        f"RMS(x1_ref); err_p50/err_max: median/largest per-sample error on the same scale. "
        f"Efficiency = pairs/s × NFE / forward images/s at the same batch, the forwards timed "
        f"right after each solve (median over rounds). Wall time: {res.seconds:.0f} s.",
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


def to_json(res: PairgenResult) -> dict:
    """A JSON-able dict of the result (written next to the cached model)."""
    return asdict(res)
