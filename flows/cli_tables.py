"""Tables the ``rectiflow`` commands print: the NFE sweep summary and ``compare``'s metrics."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from rf_core.evaluate import EvalRow
    from storage.tracking import Evaluation


FD_LABELS = {"fd": "Fréchet distance (classifier features)", "fid_inception": "Inception FID"}


def summary_table(rows: tuple[EvalRow, ...], fd_name: str = "fd") -> Table:
    """Models as rows, Euler NFE (and dopri5) as columns, the quality metric in the cells
    (``fd_name``: what the rows' Fréchet distance is, a key of ``FD_LABELS``)."""
    metric = "fd" if any(r.fd is not None for r in rows) else "swd"
    settings = list(dict.fromkeys((r.solver, r.steps) for r in rows))
    label = FD_LABELS[fd_name] if metric == "fd" else "sliced Wasserstein"
    table = Table(title=f"{label}, lower is better")
    table.add_column("model")
    for solver, steps in settings:
        table.add_column(f"NFE {steps}" if steps else f"{solver} (adaptive)", justify="right")
    table.add_column("straightness", justify="right")
    for model in dict.fromkeys(r.model for r in rows):
        cells = {(r.solver, r.steps): r for r in rows if r.model == model}
        values = []
        for key in settings:
            r = cells.get(key)
            value = None if r is None else getattr(r, metric)
            text = "–" if value is None else f"{value:.4g}"
            if r is not None and key[1] is None:
                text += f" ({r.nfe} NFE)"
            values.append(text)
        table.add_row(model, *values, f"{next(iter(cells.values())).straightness:.4g}")
    return table


_FAMILIES = ("fd", "fid_inception", "swd", "class_acc", "nfe", "straightness")


def _metric_order(key: str) -> tuple[int, int, str]:
    """Column order: fd/euler_1 < fd/euler_2 < fd/dopri5 < swd < class_acc < nfe < straightness."""
    family, _, setting = key.partition("/")
    rank = _FAMILIES.index(family) if family in _FAMILIES else len(_FAMILIES)
    steps = re.fullmatch(r"[a-z0-9]+_(\d+)", setting)
    return rank, int(steps.group(1)) if steps else 10**6, key


def format_metric(value: float) -> str:
    """How ``compare`` prints a metric (also what its test parses back)."""
    return f"{value:.6g}"


def compare_table(evals: list[Evaluation]) -> Table:
    """One row per (model, evaluation run), one column per metric any of them logged."""
    keys = sorted({k for e in evals for k in e.metrics}, key=_metric_order)
    table = Table(title="evaluation metrics (fd, fid_inception, swd: lower is better)")
    for col in ("model", "model id", "evaluation run"):
        table.add_column(col, no_wrap=True)
    for k in keys:
        table.add_column(k, justify="right", no_wrap=True)
    for e in evals:
        cells = [format_metric(e.metrics[k]) if k in e.metrics else "–" for k in keys]
        table.add_row(e.name, e.model_id, e.run_id, *cells)
    return table
