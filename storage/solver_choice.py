"""Pair stores whose solver a screen chooses on the model (``pairs.solver.method: auto``).

Whoever creates the store screens once (:func:`rf_core.solver_screen.screen_solvers`) on the first
``probe`` noise draws of chunk 0, the noise the store will hold, then creates the store with:

- ``solver``: the chosen recipe, as a store generated with that recipe directly records it, so the
  two stores have the same digest and the same bytes;
- ``solver_choice``: what the screen measured and why (the request, the reference's NFE, every
  trial's NFE and pair error), outside the digest and the resume identity.

Resume, repair and every other writer read ``solver`` and never screen again. A request resumes an
``auto`` store when it asks what the store's record asked (tolerance, probe, batch, compile); a
store made with a pinned solver is not resumed by an ``auto`` request, nor the other way round
unless the pinned recipe is the one chosen.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import torch
from torch import nn

from rf_core.screen_result import Screen
from rf_core.solver_screen import ToleranceUnreachable, screen_solvers
from rf_core.solver_spec import SolverSpec
from storage.generate import draw_inputs
from storage.layout import SOLVER_CHOICE, PairStoreError, StoreExistsError, solver_spec
from storage.location import exists
from storage.pairstore import PairStore

_log = logging.getLogger(__name__)


def probe_inputs(
    request: SolverSpec, seed: int, chunk: int, n: int, sample_shape: Sequence[int], classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``request.probe`` noise draws and labels of chunk 0 of such a store.

    Chunk 0 is drawn whole (its labels come after all its noise) and cut, so the draws are the
    store's own first samples. Check the request first (:func:`resolve_request`).
    """
    x0, y = draw_inputs(seed, 0, min(chunk, n), sample_shape, classes)
    return x0[: request.probe], y[: request.probe]


def resolve_request(solver: SolverSpec | Mapping[str, Any], chunk: int, n: int) -> SolverSpec:
    """``solver`` as a spec, an auto request with its batch size resolved (unset = one chunk).

    Raises:
        PairStoreError: a bad solver dict, or a probe larger than the first chunk.
    """
    spec = solver_spec(solver)
    if not spec.is_auto:
        return spec
    try:
        spec.check_fits(chunk, n)
    except ValueError as e:
        raise PairStoreError(str(e)) from None
    return spec.model_copy(update={"batch_size": spec.batch_size or chunk})


def open_or_create_pairs(
    uri: str,
    load_model: Callable[[], nn.Module] | None = None,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = _log.info,
    **kwargs: Any,
) -> PairStore:
    """:meth:`PairStore.open_or_create` for any solver request, an auto one screened first.

    Args:
        uri: the store.
        load_model: returns the source model; called only when a screen runs (a new store with
            an auto request), so a resume never loads it here. None: only existing stores and
            recipes can be opened.
        device: where the screen solves.
        log: progress lines (the screen's, and whether it pays for itself at this ``n``).
        **kwargs: the arguments of :meth:`PairStore.create`.

    Raises:
        PairStoreError: bad arguments (before any work), or a store made differently, naming
            both sides; ToleranceUnreachable: no solver met the tolerance (nothing written).
    """
    request = resolve_request(kwargs["solver"], kwargs["chunk"], kwargs["n"])
    if not request.is_auto:
        return PairStore.open_or_create(uri, **kwargs)
    if not exists(uri):
        if load_model is None:
            what = f"a new store for {request.label()} needs the model to screen solvers on"
            raise PairStoreError(f"no pair store at {uri}: {what}")
        screen = run_screen(load_model(), request, device, log, **kwargs)
        record = screen.record() | {"screened_at": datetime.now(UTC).isoformat()}
        try:
            args = {**kwargs, "solver": screen.chosen, "solver_choice": record}
            return PairStore.create(uri, **args)
        except StoreExistsError:
            pass  # a concurrent creator won the race: resume what it made
    return resume_auto(uri, request, **kwargs)


def run_screen(
    model: nn.Module, request: SolverSpec, device, log: Callable[[str], None], **kwargs: Any
) -> Screen:
    """Screen ``request`` on the store's probe draws; log whether it pays for itself."""
    shape, classes = kwargs["sample_shape"], kwargs["num_classes"]
    x0, y = probe_inputs(request, kwargs["seed"], kwargs["chunk"], kwargs["n"], shape, classes)
    try:
        screen = screen_solvers(model.to(device).eval(), x0, y, request, device=device, log=log)
    except ToleranceUnreachable as e:
        raise ToleranceUnreachable(f"{e}. Nothing was written.") from None
    log(payoff_line(screen, kwargs["n"], kwargs["chunk"]))
    return screen


def payoff_line(screen: Screen, n: int, chunk: int) -> str:
    """Whether the screen costs less than its choice saves on ``n`` pairs, against the loosest
    adaptive solver that met the tolerance; when not, the ``pairs.solver`` that pins the choice."""
    cost, saved, base = screen.evaluations, screen.saving(n), screen.baseline
    head = f"the screen cost {cost:,} sample evaluations"
    if base is None:
        return head + "; no adaptive solver met the tolerance, the screen's choice is the only one"
    head += (
        f"; {screen.chosen.label()} saves {saved:,} over {base.solver.label()} ({base.nfe} NFE "
        f"per pair, the loosest adaptive solver that met the tolerance) on {n:,} pairs"
    )
    if saved > cost:
        return head + ": it pays for itself"
    pin = json.dumps(pinned(screen, chunk))
    return head + f": the screen costs more than it saves; pin pairs.solver: {pin}"


def pinned(screen: Screen, chunk: int) -> dict[str, Any]:
    """The ``pairs.solver`` that generates the chosen recipe without a screen."""
    spec = screen.chosen
    out = {"method": spec.method}
    out |= spec.model_dump(mode="json", exclude_defaults=True, exclude={"batch_size"})
    return out | ({"batch_size": spec.batch_size} if spec.batch_size != chunk else {})


def resume_auto(uri: str, request: SolverSpec, **kwargs: Any) -> PairStore:
    """Open the existing store for an auto request: its record must ask the same, and the rest
    must match as for any resume. Never screens.

    Raises:
        PairStoreError: naming both sides; nothing is changed.
    """
    store = PairStore.open_when_created(uri)
    record = store.attrs.get(SOLVER_CHOICE)
    want = request.store_dict(kwargs["chunk"])
    if record is None:
        raise PairStoreError(
            f"cannot resume pair store {uri}: its solver {store.solver.label()} was pinned, not "
            f"chosen by a screen, and this run asks for {request.label()} ({want}). Pin "
            f"pairs.solver to the store's recipe or use a new store URI; nothing was changed."
        )
    have = SolverSpec.from_dict(record["request"]).store_dict(store.chunk)
    if have != want:
        raise PairStoreError(
            f"cannot resume pair store {uri}: its solver was chosen for the request {have}, "
            f"this run asks for {want}. Use a new store URI; nothing was changed."
        )
    return PairStore.open_or_create(uri, **{**kwargs, "solver": store.solver})


def recorded_screen(store: PairStore) -> Screen | None:
    """The screen that chose ``store``'s solver, read from its record; None for a pinned one."""
    record = store.attrs.get(SOLVER_CHOICE)
    return None if record is None else Screen.from_record(record, store.solver)
