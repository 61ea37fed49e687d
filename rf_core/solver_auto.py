"""``method: auto``: a request for a pair solver, not a recipe (a
:class:`~rf_core.solver_spec.SolverSpec` of either kind).

It asks for the solver with the fewest NFE per pair whose pair error is within ``tolerance``,
measured on ``probe`` noise draws of the store's first chunk (:mod:`rf_core.solver_screen`). A
store records the recipe the screen chose as its ``solver``, so its digest equals that of a store
generated with that recipe directly; the request's fields (``tolerance``, ``probe``) are never
part of a recipe's stored dict.

Here: the request's fields and their defaults, and the checks of which fields go with which
method, which SolverSpec runs as its validators.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rf_core.solver_spec import SolverSpec

AUTO = "auto"
# The fields of an auto request only (never in a recipe's stored dict), and their defaults.
AUTO_FIELDS = ("tolerance", "probe")
DEFAULT_PAIR_TOLERANCE = 2e-3
DEFAULT_PROBE = 64
# What an auto request records: what it asks and how the chosen recipe will be run.
REQUEST_FIELDS = ("method", "batch_size", "compile", *AUTO_FIELDS)
# What an auto request leaves to the screen: setting one of these with method auto is an error.
CHOSEN_FIELDS = ("rtol", "atol", "steps", "grid", "rho")


def with_request_defaults(data: Any) -> Any:
    """The raw fields of an auto request with an unset or None tolerance and probe defaulted;
    anything else as it is."""
    if isinstance(data, Mapping) and data.get("method") == AUTO:
        defaults = {"tolerance": DEFAULT_PAIR_TOLERANCE, "probe": DEFAULT_PROBE}
        return {**data, **{k: v for k, v in defaults.items() if data.get(k) is None}}
    return data


def check_request_fields(spec: SolverSpec) -> None:
    """ValueError for a request's field on a recipe (tolerance or probe with a method other than
    auto), or for a field the screen chooses set on a request (rtol, atol, steps, grid, rho)."""
    if spec.method == AUTO:
        given = [f for f in CHOSEN_FIELDS if f in spec.model_fields_set]
        if given:
            names = " and ".join(repr(f) for f in given)
            raise ValueError(
                f"method 'auto' chooses {', '.join(given)} itself: remove {names}, or pin a "
                "method (e.g. rk4 with steps) instead of auto"
            )
        return
    given = [f for f in AUTO_FIELDS if getattr(spec, f) is not None]
    if given:
        names, verb = " and ".join(repr(f) for f in given), "apply" if given[1:] else "applies"
        raise ValueError(
            f"{names} {verb} to method 'auto' only (method is {spec.method!r}): remove "
            f"{'them' if given[1:] else 'it'}, or set method: auto to let a screen choose"
        )
