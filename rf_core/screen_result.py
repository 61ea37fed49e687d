"""What a solver screen measured and chose (:mod:`rf_core.solver_screen`), as a pair store
records it: one :class:`Trial` per solver solved, and the :class:`Screen` around them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rf_core.pair_error import REFERENCE_TOL
from rf_core.solver_auto import REQUEST_FIELDS
from rf_core.solver_spec import SolverSpec


@dataclass(frozen=True)
class Trial:
    """One solver measured on the probe draws.

    Attributes:
        solver: the recipe solved (one batch of all probe draws).
        nfe: model evaluations per pair, counted.
        error: pair error against the reference.
        bound: the error's upper bound, which the rule compares with the tolerance.
        err_max: the largest per-sample error (same scale).
        seconds: wall time of the solve.
    """

    solver: SolverSpec
    nfe: int
    error: float
    bound: float
    err_max: float
    seconds: float

    def meets(self, tolerance: float) -> bool:
        return self.bound <= tolerance

    def row(self) -> dict[str, Any]:
        """JSON-ready: the solver's label and its recipe fields beside the measurements."""
        spec = self.solver.model_dump(mode="json", exclude_defaults=True)
        return {"solver": self.solver.label(), "spec": {"method": self.solver.method, **spec}} | {
            k: getattr(self, k) for k in ("nfe", "error", "bound", "err_max", "seconds")
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Trial:
        fields = {k: row[k] for k in ("nfe", "error", "bound", "err_max", "seconds")}
        return cls(SolverSpec.from_dict(row["spec"]), **fields)


@dataclass(frozen=True)
class Screen:
    """What a screen measured and chose.

    Attributes:
        request: the auto request (tolerance, probe, batch_size, compile).
        chosen: the recipe to generate with: the winning trial's solver with the request's
            batch_size and compile.
        fallback: True when no fixed-step candidate met the tolerance (an adaptive solver was
            chosen, tightened until it met it).
        reference_nfe: NFE per pair of the reference solve.
        reference_seconds: its wall time.
        trials: every solver measured, in the order measured.
        compile_seconds: the compilation's first call (0 when eager).
        seconds: wall time of the whole screen.
    """

    request: SolverSpec
    chosen: SolverSpec
    fallback: bool
    reference_nfe: int
    reference_seconds: float
    trials: tuple[Trial, ...]
    compile_seconds: float
    seconds: float

    @property
    def chosen_trial(self) -> Trial:
        return next(t for t in self.trials if _recipe(t.solver) == _recipe(self.chosen))

    @property
    def baseline(self) -> Trial | None:
        """The loosest adaptive solver that met the tolerance (what meets it without a
        fixed-step screen); None when none did, down to the tightest one screened."""
        tol = self.request.tolerance
        return next((t for t in self.trials if t.solver.adaptive and t.meets(tol)), None)

    @property
    def evaluations(self) -> int:
        """Model evaluations of one sample spent by the screen (probe x NFE, summed)."""
        return self.request.probe * (self.reference_nfe + sum(t.nfe for t in self.trials))

    def saving(self, n: int) -> int | None:
        """Evaluations the choice saves over the baseline on ``n`` pairs (None: no baseline)."""
        base = self.baseline
        return None if base is None else n * (base.nfe - self.chosen_trial.nfe)

    def table(self) -> list[dict[str, Any]]:
        """One row per trial for displays: solver, NFE, error, bound, max, chosen."""
        won = self.chosen_trial
        keys = ("solver", "nfe", "error", "bound", "err_max")
        return [{k: t.row()[k] for k in keys} | {"chosen": t is won} for t in self.trials]

    def record(self) -> dict[str, Any]:
        """JSON-ready record (a pair store's ``solver_choice``); :meth:`from_record` reads it."""
        return {
            "request": self.request.model_dump(mode="json", include=set(REQUEST_FIELDS)),
            "chosen": self.chosen.label(),
            "fallback": self.fallback,
            "reference": {"method": "dopri5", "rtol": REFERENCE_TOL, "atol": REFERENCE_TOL}
            | {"nfe": self.reference_nfe, "seconds": self.reference_seconds},
            "trials": [t.row() for t in self.trials],
            "evaluations": self.evaluations,
            "compile_seconds": self.compile_seconds,
            "seconds": self.seconds,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], chosen: SolverSpec) -> Screen:
        """The screen a record describes; ``chosen`` is the recipe the store holds."""
        ref = record["reference"]
        return cls(
            SolverSpec.from_dict(record["request"]),
            chosen,
            bool(record["fallback"]),
            int(ref["nfe"]),
            float(ref["seconds"]),
            tuple(Trial.from_row(r) for r in record["trials"]),
            float(record["compile_seconds"]),
            float(record["seconds"]),
        )


def _recipe(spec: SolverSpec) -> SolverSpec:
    """``spec`` without its execution fields (batch partition, compile)."""
    return replace_spec(spec, batch_size=None, compile=False)


def replace_spec(spec: SolverSpec, **fields: Any) -> SolverSpec:
    """A validated copy of ``spec`` with ``fields`` changed (model_copy does not validate)."""
    return SolverSpec.model_validate(spec.model_dump(exclude_unset=True) | fields)
