"""``rectiflow lineage``: the chain of data, models and pair sets around a model or a store."""

from __future__ import annotations

from dataclasses import dataclass, field

from flows.errors import InputError, bad_input
from storage import tracking
from storage.pairstore import PairStore, PairStoreError

FIELD = "MODEL_OR_STORE"


@dataclass
class Lineage:
    """The family of a model: its root 1-RF and everything derived from it.

    Attributes:
        root: id of the oldest known ancestor model.
        focus: the model id or store URI asked about (highlighted).
    """

    root: str
    focus: str
    seen: set[str] = field(default_factory=set)


def ancestors(model_id: str) -> list[str]:
    """Model ids from the root down to ``model_id``, following training pair sets back."""
    chain = [model_id]
    while True:
        _, sets = tracking.training_inputs(chain[0])
        source = tracking.pair_set_source(sets[0].digest) if sets else None
        if source is None or source in chain:
            return chain
        chain.insert(0, source)


def lineage_of(target: str) -> Lineage:
    """Resolve a model reference (m-<id>, models:/...) or a store URI to its lineage.

    Raises:
        InputError: when the target is neither a known model nor a pair store with a source model.
    """
    if target.startswith(("m-", "models:/")):
        with bad_input(FIELD):
            model_id = tracking.resolve_model(target, FIELD).model_id
        return Lineage(ancestors(model_id)[0], model_id)
    try:
        store = PairStore.open(target, mode="r")
    except PairStoreError as e:
        raise InputError(
            f"{FIELD}: {target!r} is neither a model (m-<id>, models:/<name>/<version>) nor a "
            "pair store"
        ) from e
    source = store.source.get("model_id")
    if not source:
        raise InputError(
            f"{FIELD}: pair store {target} was generated from a bare checkpoint: no lineage"
        )
    return Lineage(ancestors(source)[0], store.uri)


def _metrics_line(model_id: str) -> str:
    m = tracking.model_metrics(model_id)
    keys = sorted(k for k in m if "euler" in k and not k.startswith("nfe")) + [
        k for k in ("straightness",) if k in m
    ]
    return ", ".join(f"{k}={m[k]:.4g}" for k in keys) or "no evaluation metrics"


def render(lin: Lineage) -> list[str]:
    """Indented lines: [the root's training data ->] model -> pair sets generated from it ->
    models trained on them -> ...

    Plain lines (rich markup only for emphasis) so long ids and URIs are never cropped.
    """
    data = [
        f"data {d.kind} {d.uri}  [dim]digest {d.digest}[/]"
        for d in tracking.training_data(lin.root)
    ]
    lines = [*data, _model_label(lin.root, lin)]
    _grow(lines, lin.root, lin, depth=1)
    return lines


def _mark(text: str, focus: bool) -> str:
    return f"[bold yellow]▶ {text}[/]" if focus else text


def _model_label(model_id: str, lin: Lineage) -> str:
    text = _mark(f"model {tracking.model_name(model_id)}", model_id == lin.focus)
    return f"{text}  [dim]{_metrics_line(model_id)}[/]"


def _grow(lines: list[str], model_id: str, lin: Lineage, depth: int) -> None:
    if model_id in lin.seen:
        return
    lin.seen.add(model_id)
    pad = "   " * (depth - 1) + "└─ "
    for ps in tracking.pair_sets_from_model(model_id):
        text = _mark(f"pair set {ps.uri}", ps.uri == lin.focus)
        seed = f", seed {ps.seed}" if ps.seed is not None else ""
        lines.append(f"{pad}{text}  [dim]digest {ps.digest}{seed}[/]")
        for trained in tracking.models_trained_on(ps.digest):
            lines.append("   " * depth + "└─ " + _model_label(trained, lin))
            _grow(lines, trained, lin, depth + 2)
