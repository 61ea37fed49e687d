"""Choose a model's pair solver by measuring it: the screen behind ``pairs.solver.method: auto``.

On ``probe`` noise draws (the caller passes them; pair generation passes the first draws of the
store's chunk 0, the noise the store itself will hold):

1. a reference: dopri5 at rtol = atol = ``REFERENCE_TOL`` (its NFE counted);
2. fixed-step candidates (:func:`candidate_ladder`), grouped by NFE per pair and tried from the
   cheapest group up; every candidate of a group is solved, and the screen stops at the first
   group where one meets the tolerance (the one with the smallest error bound wins the group);
3. the adaptive solver at the tolerance (dopri5, rtol = atol = tolerance), tightened tenfold
   until it meets the tolerance (at most down to ``TIGHTEST_ADAPTIVE``): it is what meets the
   tolerance without a fixed-step screen, the yardstick of what the screen saves, and the
   fallback when no fixed-step candidate meets it.

A solver *meets* the tolerance when the upper bound of its pair error
(:func:`rf_core.pair_error.error_bound`) is within it, so that the error on other noise stays
within it too. The choice is the measured solver that meets it with the fewest NFE per pair (a
fixed-step one on a tie). Everything is measured on the given model, compiled first when the
request says ``compile``, so the probe runs what generation will run.

The choice is deterministic for a model and its noise, and a tighter tolerance never picks a
fixed-step solver with fewer NFE: the candidates and their errors do not depend on the
tolerance, and the groups are tried in NFE order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from rf_core.compiled import compile_velocity
from rf_core.pair_error import REFERENCE_TOL, error_bound, reference_solve, sample_errors
from rf_core.screen_result import Screen, Trial, replace_spec
from rf_core.solver_spec import SolverSpec
from rf_core.solvers import solve_ode

# NFE per pair of the candidate groups: a few hundred model evaluations per candidate at most.
LEVELS = (1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192)
LEVELS += (224, 256)
# The tightest adaptive fallback: ten times the reference's tolerance (less a rounding margin, so
# that tenfold steps from a tolerance of 1e-3 still reach it).
TIGHTEST_ADAPTIVE = 10 * REFERENCE_TOL
TIGHTEST = TIGHTEST_ADAPTIVE * (1 - 1e-9)
# The ends grid's strength among the candidates (it led earlier screens at 6-12 rk4 steps).
ENDS_RHO = 1.5

_log = logging.getLogger(__name__)


class ToleranceUnreachable(ValueError):
    """No solver met the pair-error tolerance on the probe, the tightest adaptive one included."""


def candidate_ladder(levels: tuple[int, ...] = LEVELS) -> list[tuple[int, tuple[SolverSpec, ...]]]:
    """Fixed-step candidates grouped by NFE per pair, cheapest group first.

    At ``nfe`` evaluations: rk4 (4 per step) on the ends grid and on the uniform grid when
    ``nfe`` is a multiple of 4; midpoint (2 per step) up to 16; Euler up to 8 (it only wins on
    nearly straight fields, such as a k-RF's).
    """
    out = []
    for nfe in levels:
        specs = []
        if nfe % 4 == 0 and nfe >= 8:
            specs.append(SolverSpec(method="rk4", steps=nfe // 4, grid="ends", rho=ENDS_RHO))
        if nfe % 4 == 0:
            specs.append(SolverSpec(method="rk4", steps=nfe // 4))
        if nfe % 2 == 0 and nfe <= 16:
            specs.append(SolverSpec(method="midpoint", steps=nfe // 2))
        if nfe <= 8:
            specs.append(SolverSpec(method="euler", steps=nfe))
        out.append((nfe, tuple(specs)))
    return out


def _adaptive(tol: float) -> SolverSpec:
    """dopri5 at rtol = atol = ``tol``, never tighter than ``TIGHTEST_ADAPTIVE`` (a solve at the
    reference's own tolerance would match the reference whatever its error)."""
    tol = max(tol, TIGHTEST_ADAPTIVE)
    return SolverSpec(method="dopri5", rtol=tol, atol=tol)


def _trial(model: nn.Module, x0: Tensor, y: Tensor | None, spec: SolverSpec, ref: Tensor, device):
    start = time.perf_counter()
    res = solve_ode(model, x0, y, device=device, **spec.solve_kwargs())
    errs = sample_errors(res.x1, ref)
    rms = float(errs.pow(2).mean().sqrt())
    sec = time.perf_counter() - start
    return Trial(spec, res.nfe, rms, error_bound(errs), float(errs.max()), sec)


def _fixed_pick(measure: Callable[[SolverSpec], Trial], tol: float, log) -> list[Trial]:
    """Trials of the candidate groups up to the first with a solver that meets ``tol``."""
    trials: list[Trial] = []
    for nfe, group in candidate_ladder():
        got = [measure(spec) for spec in group]
        trials += got
        best = min(got, key=lambda t: t.bound)
        label, err, bound = best.solver.label(), best.error, best.bound
        log(f"  {nfe:>3} NFE: best {label} error {err:.2e} (bound {bound:.2e})")
        if best.meets(tol):
            break
    return trials


def _choose(trials: list[Trial], tol: float) -> Trial | None:
    """Fewest NFE among the trials that meet ``tol``; then fixed-step, then smallest bound."""
    meeting = [t for t in trials if t.meets(tol)]
    return min(meeting, key=lambda t: (t.nfe, t.solver.adaptive, t.bound), default=None)


def screen_solvers(
    model: nn.Module,
    x0: Tensor,
    y: Tensor | None,
    request: SolverSpec,
    device: str | torch.device | None = None,
    log: Callable[[str], None] = _log.info,
) -> Screen:
    """Measure solvers on ``x0`` and choose the cheapest that meets ``request.tolerance``.

    Args:
        model: the velocity field (on ``device``); compiled here for ``len(x0)`` rows when
            ``request.compile`` (the compiled graph is specialised to its batch: padding the
            probe up to the generation batch would multiply its cost).
        x0: (probe, *shape) noise, ``request.probe`` draws.
        y: (probe,) labels, or None (unconditional).
        request: an auto SolverSpec.
        device: where to solve (default: x0's).
        log: progress lines.

    Returns:
        The Screen: the chosen recipe and every measurement.

    Raises:
        ValueError: ``request`` is not auto, or ``x0`` does not hold ``request.probe`` draws.
        ToleranceUnreachable: not even dopri5 at ``TIGHTEST_ADAPTIVE`` met the tolerance.
        rf_core.compiled.CompileError: compilation failed.
    """
    if not request.is_auto or len(x0) != request.probe:
        raise ValueError(
            f"need an auto request and its probe draws, got {request.label()} and {len(x0)} draws"
        )
    start, tol = time.perf_counter(), request.tolerance
    log(f"screening pair solvers on {len(x0)} noise draws (pair-error tolerance {tol:g})")
    model, compile_s = _prepare(model, x0, y, request.compile, device)
    ref_s = time.perf_counter()
    ref = reference_solve(model, x0, y, device=device)
    ref_s = time.perf_counter() - ref_s
    log(f"  reference dopri5 {REFERENCE_TOL:g}: {ref.nfe} NFE per pair, {ref_s:.1f} s")

    def measure(spec: SolverSpec) -> Trial:
        return _trial(model, x0, y, spec, ref.x1, device)

    trials = _fixed_pick(measure, tol, log)
    fallback = not any(t.meets(tol) for t in trials)
    trials.append(measure(_adaptive(tol)))
    while not trials[-1].meets(tol) and trials[-1].solver.rtol / 10 >= TIGHTEST:
        trials.append(measure(_adaptive(trials[-1].solver.rtol / 10)))
    a = trials[-1]
    log(f"  adaptive: {a.solver.label()} {a.nfe} NFE, error {a.error:.2e} (bound {a.bound:.2e})")
    won = _choose(trials, tol)
    if won is None:
        raise ToleranceUnreachable(
            f"solver['tolerance'] = {tol:g} is tighter than any solver reaches on this model: "
            f"dopri5 at {trials[-1].solver.rtol:g} measured {trials[-1].error:.2e} (bound "
            f"{trials[-1].bound:.2e}) against the reference (dopri5 at {REFERENCE_TOL:g}); "
            "use a looser tolerance or pin a solver"
        )
    chosen = replace_spec(won.solver, batch_size=request.batch_size, compile=request.compile)
    seconds = time.perf_counter() - start
    screen = Screen(request, chosen, fallback, ref.nfe, ref_s, tuple(trials), compile_s, seconds)
    log(
        f"  chose {chosen.label()}: {won.nfe} NFE per pair, error {won.error:.2e} (bound "
        f"{won.bound:.2e}); the screen spent {screen.evaluations:,} sample evaluations"
    )
    return screen


def _prepare(model, x0, y, compile: bool, device) -> tuple[nn.Module, float]:
    """The model the trials run (compiled at the probe's batch, first call timed)."""
    if not compile:
        return model, 0.0
    compiled = compile_velocity(model, len(x0))
    start = time.perf_counter()
    with torch.inference_mode():  # inputs made here, as a solve makes them (the graph guards)
        x = x0.to(device or x0.device).clone()
        t = torch.zeros(len(x0), device=x.device)
        labels = None if y is None else y.to(x.device).clone()
        compiled(x, t, labels)
    return compiled, time.perf_counter() - start
