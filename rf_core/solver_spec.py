"""How pairs are solved: one frozen spec for the config, the pair store, the worker CLI and the
benchmarks.

A :class:`SolverSpec` is read from ``pairs.solver`` in a pipeline config, written into a pair
store's ``solver`` attribute (:meth:`SolverSpec.store_dict`), read back from it
(:meth:`SolverSpec.from_dict`), compared to resume a store (:meth:`SolverSpec.resume_identity`)
and handed to :func:`rf_core.solvers.solve_ode` (:meth:`SolverSpec.solve_kwargs`). The format of
the stored dict is described in docs/pair-store.md, the config field in docs/configuration.md.

Adding a field: give it a default that reproduces what stores written before it did. A store's
digest covers its solver dict as stored, so it never changes; a stored dict without the new key
reads as the default, so the store keeps resuming under a request that leaves the field alone.
A field in :data:`RECORDED_WHEN_SET` is written only when it differs from its default, so a new
store that leaves it alone has the attrs (and the digest) it had before the field existed.

``method: auto`` is a request, not a recipe: a screen turns it into the recipe a store records
(its fields, defaults and checks: :mod:`rf_core.solver_auto`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rf_core.guidance import is_scale, scale_label
from rf_core.solver_auto import (
    AUTO,
    AUTO_FIELDS,
    DEFAULT_PAIR_TOLERANCE,
    DEFAULT_PROBE,
    check_request_fields,
    with_request_defaults,
)
from rf_core.solvers import ADAPTIVE_METHODS, DEFAULT_TOL, METHODS
from rf_core.timegrids import GRIDS, RHO_GRIDS, time_grid

# Fields a store's solver dict holds only when they differ from their default.
RECORDED_WHEN_SET = ("guidance",)
SPEC_METHODS = (*METHODS, AUTO)


class SolverSpec(BaseModel):
    """An ODE solver recipe for pair generation (torchdiffeq method names).

    Fixed-step methods take ``steps`` (and a ``grid`` placing them); adaptive ones take ``rtol``
    and ``atol`` and pick their own steps. Every field that changes the bytes of a pair is part
    of the spec, including the batch partition and ``compile``: adaptive step control runs over a
    whole batch, and compiled kernels round differently from eager ones (~1e-6). ``compile``
    gave ~1.4x the pairs/s on CPU (BENCHMARKS.md) after a one-off compilation per process
    (47 s cold, 9 s with torch's cache warm); it needs a C++ compiler on CPU.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal[SPEC_METHODS] = Field(
        "dopri5", description="torchdiffeq method, or auto (screened on the model)"
    )
    rtol: float = Field(
        DEFAULT_TOL, gt=0, allow_inf_nan=False, description="relative tolerance (adaptive methods)"
    )
    atol: float = Field(
        DEFAULT_TOL, gt=0, allow_inf_nan=False, description="absolute tolerance (adaptive methods)"
    )
    steps: int | None = Field(None, description="number of steps (fixed-step methods)")
    batch_size: int | None = Field(None, description="samples per solve; None = one chunk")
    grid: Literal[GRIDS] = Field("uniform", description="where a fixed-step method's steps go")
    rho: float = Field(2.0, description=f"strength of the {'/'.join(RHO_GRIDS)} grids")
    compile: bool = Field(False, description="run the model under torch.compile (C++ compiler)")
    guidance: float = Field(
        0.0,
        description="classifier-free guidance scale w, 0 = unguided (the source model needs "
        "train.label_dropout > 0); each step then costs two evaluations",
    )
    tolerance: float | None = Field(
        None, description=f"pair-error tolerance of method auto (default {DEFAULT_PAIR_TOLERANCE})"
    )
    probe: int | None = Field(
        None, description=f"noise draws method auto screens solvers on (default {DEFAULT_PROBE})"
    )

    @model_validator(mode="before")
    @classmethod
    def _auto_defaults(cls, data: Any) -> Any:
        return with_request_defaults(data)

    @field_validator("method", "grid", mode="before")
    @classmethod
    def _known(cls, v: Any, info: ValidationInfo) -> Any:
        allowed = {"method": SPEC_METHODS, "grid": GRIDS}[info.field_name]
        if v not in allowed:
            name, choices = info.field_name, ", ".join(allowed)
            raise ValueError(f"must be one of {choices} ({name} {v!r} is not a solver {name})")
        return v

    @field_validator("steps", "batch_size", "probe", mode="before")
    @classmethod
    def _positive_int(cls, v: Any) -> Any:
        if v is not None and (isinstance(v, bool) or not isinstance(v, Integral) or v <= 0):
            raise ValueError("must be a positive int")
        return v if v is None else int(v)

    @field_validator("rho", mode="before")
    @classmethod
    def _rho(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, Real) or not 0 < v < math.inf:
            raise ValueError("must be a finite float > 0")
        return float(v)

    @field_validator("guidance", mode="before")
    @classmethod
    def _scale(cls, v: Any) -> Any:
        if not is_scale(v):
            raise ValueError("must be a finite number >= 0")
        return float(v)

    @field_validator("tolerance", mode="before")
    @classmethod
    def _tolerance(cls, v: Any) -> Any:
        if v is not None and (isinstance(v, bool) or not isinstance(v, Real) or not 0 < v < 1):
            raise ValueError(
                "must be a float with 0 < tolerance < 1 (a pair error: RMS(x1 - x1_ref) over "
                "RMS(x1_ref))"
            )
        return v if v is None else float(v)

    @field_validator("compile", mode="before")
    @classmethod
    def _bool(cls, v: Any) -> Any:
        if not isinstance(v, bool):
            raise ValueError("must be true or false")
        return v

    @model_validator(mode="after")
    def _method_fits(self) -> SolverSpec:
        m = self.method
        check_request_fields(self)
        if self.is_auto:
            return self
        if self.adaptive and self.steps is not None:
            raise ValueError(f"adaptive method {m!r} takes rtol/atol, not steps")
        if self.adaptive and self.grid != "uniform":
            raise ValueError(
                f"grid {self.grid!r} needs a fixed-step method, not {m!r}: {m!r} is adaptive "
                "(it picks its own steps); use grid 'uniform'"
            )
        if not self.adaptive and self.steps is None:
            raise ValueError(f"fixed-step method {m!r} needs solver['steps'] (a positive int)")
        return self

    def check_fits(self, chunk: int, n: int) -> None:
        """Raise ValueError naming ``solver['probe']`` when an auto request's probe draws do not
        fit in the store's first chunk (``min(chunk, n)`` samples); nothing for a recipe."""
        first = min(chunk, n)
        if self.is_auto and self.probe > first:
            raise ValueError(
                f"solver['probe'] = {self.probe} is larger than the first chunk ({first} samples: "
                f"chunk {chunk}, n {n}); the screen solves draws of the first chunk: use "
                f"probe <= {first}"
            )

    @property
    def is_auto(self) -> bool:
        """True for a request (method auto) that a screen resolves into a recipe."""
        return self.method == AUTO

    @property
    def adaptive(self) -> bool:
        """True for methods that pick their own steps (rtol/atol), False for fixed-step ones."""
        return self.method in ADAPTIVE_METHODS

    @classmethod
    def from_dict(cls, solver: Mapping[str, Any]) -> SolverSpec:
        """The spec of a solver dict as a pair store carries it (or a caller passes it).

        A key that is missing or None takes its default, so a store written before a key existed
        reads as that key's default: no grid/rho/compile means uniform/2.0/false, and a None
        tolerance (never passed to the solver) means solve_ode's default.

        Raises:
            ValueError: not a dict with a str ``method``, an unknown key, or a bad value, each
                named as ``solver['key']``.
        """
        keys = tuple(cls.model_fields)
        if (
            not isinstance(solver, Mapping)
            or not isinstance(solver.get("method"), str)
            or (set(solver) - set(keys))
        ):
            raise ValueError(
                f"solver must be a dict with a str 'method' and keys among {keys}, got {solver}"
            )
        try:
            return cls.model_validate({k: v for k, v in solver.items() if v is not None})
        except ValidationError as e:
            raise ValueError(_describe(e, "solver")) from None

    def store_dict(self, chunk: int) -> dict[str, Any]:
        """The ``solver`` attribute of a new pair store of ``chunk``-sample chunks.

        Every field of a recipe, in declaration order, with ``batch_size`` resolved (unset = one
        solve per chunk); the tolerances of a fixed-step method are None (the solver never sees
        them); the fields of :data:`RECORDED_WHEN_SET` only when set. For an auto request: what
        it asks (method, tolerance, probe, batch_size, compile), the ``request`` of a store's
        ``solver_choice`` record; a store's ``solver`` is a recipe.
        """
        if self.is_auto:
            keep = {"method", "batch_size", "compile", *AUTO_FIELDS}
            return self.model_dump(mode="json", include=keep) | {
                "batch_size": self.batch_size or chunk
            }
        out = self.model_dump(mode="json", exclude=set(AUTO_FIELDS))
        for name in RECORDED_WHEN_SET:
            if out[name] == type(self).model_fields[name].default:
                del out[name]
        out["batch_size"] = self.batch_size or chunk
        if not self.adaptive:
            out["rtol"] = out["atol"] = None
        return out

    def resume_identity(self, chunk: int) -> dict[str, Any]:
        """What must match to resume a store: :meth:`store_dict`, with ``rho`` only where the
        grid uses it. Read a stored dict through :meth:`from_dict` first (defaults filled)."""
        out = self.store_dict(chunk)
        if self.grid not in RHO_GRIDS and not self.is_auto:
            out["rho"] = None
        return out

    def solve_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`rf_core.solvers.solve_ode` for this spec.

        The uniform grid is left to solve_ode (no ``t_grid``): the pairs of stores written
        before grids existed were made that way, and a resumed chunk must match them bit for bit.
        ``compile`` is not a solve argument: see :func:`rf_core.compiled.compile_velocity`.

        Raises:
            ValueError: for an auto request (screen it first: :mod:`rf_core.solver_screen`).
        """
        if self.is_auto:
            raise ValueError(
                "method 'auto' is a request, not a solver: screen it on the model first "
                "(rf_core.solver_screen.screen_solvers) and solve with the chosen recipe"
            )
        kw: dict[str, Any] = {"method": self.method, "batch_size": self.batch_size}
        if self.guidance:
            kw["guidance"] = self.guidance
        if self.adaptive:
            return kw | {"rtol": self.rtol, "atol": self.atol}
        kw["steps"] = self.steps
        if self.grid != "uniform":
            kw["t_grid"] = time_grid(self.grid, self.steps, rho=self.rho).tolist()
        return kw

    def label(self) -> str:
        """A short name for displays and metric keys: "euler_4", "dopri5", "rk4_8_ends1.5",
        "dopri5_tol0.001", "euler_1_w2" (guided),
        "auto_tol0.002_probe64". Not an identity (batch size and compile are
        left out)."""
        if self.is_auto:
            return f"auto_tol{self.tolerance:g}_probe{self.probe}"
        parts = [self.method]
        if not self.adaptive:
            parts.append(str(self.steps))
        if self.grid != "uniform":
            parts.append(self.grid + (f"{self.rho:g}" if self.grid in RHO_GRIDS else ""))
        if self.adaptive and (self.rtol, self.atol) != (DEFAULT_TOL, DEFAULT_TOL):
            same = self.rtol == self.atol
            parts.append(f"tol{self.rtol:g}" if same else f"rtol{self.rtol:g}_atol{self.atol:g}")
        if self.guidance:
            parts.append(scale_label(self.guidance))
        return "_".join(parts)


def _describe(error: ValidationError, prefix: str) -> str:
    """One line per pydantic error, e.g. ``solver['rho'] must be a finite float > 0 (got 0)``."""
    lines = []
    for err in error.errors():
        cause = err.get("ctx", {}).get("error")
        where = "".join(f"[{p!r}]" for p in err["loc"]) + " " if err["loc"] else ": "
        line = prefix + where + (str(cause) if isinstance(cause, ValueError) else err["msg"])
        lines.append(line + (f" (got {err['input']!r})" if err["loc"] else ""))
    return "; ".join(lines)
