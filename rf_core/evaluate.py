"""NFE sweeps: sample every model at a few step counts from the same noise and score the results.

Each model of a run (1-RF, 2-RF, +distill, ...) is integrated from one shared ``(x0, y)`` with
Euler at 1, 2, 4, 8 steps and with adaptive dopri5 (its measured NFE reported), so differences
between rows come from the models, not from the draw. Scores are deterministic functions of the
samples (the sliced-Wasserstein projections are re-seeded on every call), so evaluating a model
twice with the same seed gives identical numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from rf_core import metrics
from rf_core.guidance import GuidedVelocity
from rf_core.solvers import ADAPTIVE_METHODS, FIXED_METHODS, solve_ode

if TYPE_CHECKING:
    from rf_core.frechet import FrechetEvaluator


@dataclass(frozen=True)
class Score:
    """Quality of one batch of samples; fields that do not apply are None."""

    fd: float | None = None
    class_acc: float | None = None
    swd: float | None = None
    mmd: float | None = None
    precision: float | None = None
    recall: float | None = None


@dataclass(frozen=True)
class EvalRow:
    """One (model, solver, steps) cell of the sweep.

    Attributes:
        model: name of the model in the sweep (e.g. "1-rf").
        solver: torchdiffeq method, "euler" or "dopri5" by default.
        steps: fixed step count, None for the adaptive solver.
        nfe: measured model evaluations per sample batch.
        fd: Fréchet distance (images), lower is better.
        class_acc: classifier agreement with the conditioning label (conditional images).
        swd: sliced Wasserstein distance to target samples (2-D toys).
        straightness: S of the model on this noise, same value in every row of a model.
        mmd: squared RBF-kernel MMD to target samples (2-D toys).
        precision: fraction of samples on the real images' k-NN feature manifold (images).
        recall: fraction of real images on the samples' k-NN feature manifold (images).
        guidance: classifier-free guidance scale the samples were drawn with (0 = unguided).
    """

    model: str
    solver: str
    steps: int | None
    nfe: int
    fd: float | None
    class_acc: float | None
    swd: float | None
    straightness: float
    mmd: float | None = None
    precision: float | None = None
    recall: float | None = None
    guidance: float = 0.0


Scorer = Callable[[Tensor, Tensor], Score]
SampleKey = tuple[str, str, int | None]


class ImageScorer:
    """Scores images with a :class:`FrechetEvaluator`: Fréchet distance, precision, recall.

    Samples are clamped to [-1, 1] first, as when they are saved as pictures; class accuracy is
    reported only when every label is >= 0 (conditional samples).
    """

    def __init__(self, evaluator: FrechetEvaluator):
        self.evaluator = evaluator

    def __call__(self, samples: Tensor, y: Tensor) -> Score:
        x = samples.clamp(-1, 1)
        acc = None
        if self.evaluator.classifier is not None and len(y) and int(y.min()) >= 0:
            acc = self.evaluator.class_accuracy(x, y)
        s = self.evaluator.score(x)
        return Score(fd=s.fd, class_acc=acc, precision=s.precision, recall=s.recall)


class ToyScorer:
    """Sliced Wasserstein distance (fixed projections) and RBF MMD of samples to fixed targets."""

    def __init__(self, target: Tensor, n_proj: int = 256, seed: int = 0):
        if target.dim() != 2 or len(target) < 2:
            raise ValueError(f"target must be (M, D) with M >= 2, got {tuple(target.shape)}")
        self.target, self.n_proj, self.seed = target, n_proj, seed

    def __call__(self, samples: Tensor, y: Tensor) -> Score:
        if samples.dim() != 2 or samples.shape[1] != self.target.shape[1]:
            d = self.target.shape[1]
            raise ValueError(f"samples must be (N, {d}), got {tuple(samples.shape)}")
        gen = torch.Generator().manual_seed(self.seed)  # same projections for every call
        swd = metrics.sliced_wasserstein(samples, self.target, self.n_proj, gen)
        return Score(swd=float(swd), mmd=float(metrics.mmd_rbf(samples, self.target)))


def make_scorer(
    dataset_kind: str,
    *,
    evaluator: FrechetEvaluator | None = None,
    target: Tensor | None = None,
    toy_name: str | None = None,
    n_target: int = 2048,
    n_proj: int = 256,
    seed: int = 0,
) -> Scorer:
    """Build the scorer for a dataset kind.

    Args:
        dataset_kind: ``"image"`` (needs ``evaluator``) or ``"toy"`` (needs ``target`` or
            ``toy_name``, whose fresh samples are drawn with ``seed``).
        evaluator: Fréchet evaluator for images.
        target: (M, D) target samples for toys.
        toy_name: name for :func:`rf_core.data.sample_toy` when ``target`` is None.
        n_target: number of fresh target samples drawn for ``toy_name``.
        n_proj: sliced-Wasserstein projections.
        seed: seeds the target draw and the projections.
    """
    if dataset_kind == "image":
        if evaluator is None:
            raise ValueError("dataset_kind='image' needs evaluator=FrechetEvaluator(...)")
        return ImageScorer(evaluator)
    if dataset_kind == "toy":
        if target is None:
            if toy_name is None:
                raise ValueError("dataset_kind='toy' needs target=(M, D) samples or toy_name")
            from rf_core.data import sample_toy

            # An offset seed: the target draw must not reuse the generator stream of training data.
            target = sample_toy(toy_name, n_target, torch.Generator().manual_seed(seed + 10_007))
        return ToyScorer(target, n_proj=n_proj, seed=seed)
    raise ValueError(f"dataset_kind={dataset_kind!r} is unknown; allowed: 'image', 'toy'")


def sweep_inputs(
    data_shape: Sequence[int], n: int, num_classes: int, seed: int
) -> tuple[Tensor, Tensor]:
    """Shared noise and labels for a sweep: x0 ~ N(0, I), balanced labels (or -1 if unconditional).

    Returns:
        x0 (n, *data_shape) float32 and y (n,) int64.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    x0 = torch.randn((n, *data_shape), generator=torch.Generator().manual_seed(seed))
    y = torch.arange(n) % num_classes if num_classes > 0 else torch.full((n,), -1)
    return x0, y.long()


def _check_sweep_args(models, x0, y, steps, adaptive, fixed_method, adaptive_method) -> None:
    if not isinstance(models, dict) or not models:
        raise ValueError("models must be a non-empty dict {name: velocity model}")
    for name, m in models.items():
        if not isinstance(name, str) or not isinstance(m, nn.Module) or not hasattr(m, "config"):
            raise ValueError(f"models[{name!r}] must be a velocity nn.Module with .config")
    if x0.dim() < 2 or len(x0) < 2:
        raise ValueError(f"x0 must be (N, *data_shape) with N >= 2, got {tuple(x0.shape)}")
    if y.shape != (len(x0),) or y.dtype != torch.int64:
        raise ValueError(f"y must be int64 of shape ({len(x0)},), got {y.dtype} {tuple(y.shape)}")
    if any(not isinstance(s, int) or s <= 0 for s in steps):
        raise ValueError(f"steps must be positive ints, got {tuple(steps)}")
    if not steps and not adaptive:
        raise ValueError("steps is empty and adaptive=False: nothing to evaluate")
    if fixed_method not in FIXED_METHODS:
        raise ValueError(f"fixed_method={fixed_method!r} is unknown; allowed: {FIXED_METHODS}")
    if adaptive_method not in ADAPTIVE_METHODS:
        raise ValueError(
            f"adaptive_method={adaptive_method!r} is unknown; allowed: {ADAPTIVE_METHODS}"
        )


def nfe_sweep(
    models: dict[str, nn.Module],
    x0: Tensor,
    y: Tensor,
    scorer: Scorer,
    steps: Sequence[int] = (1, 2, 4, 8),
    adaptive: bool = True,
    batch_size: int | None = None,
    fixed_method: str = "euler",
    adaptive_method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    n_t: int = 16,
    guidance: float = 0.0,
) -> tuple[list[EvalRow], dict[SampleKey, Tensor]]:
    """Sample and score every model at every solver setting from the same ``(x0, y)``.

    Straightness is measured on each model's own coupling: x0 against the endpoint of its most
    accurate solve (dopri5, else the largest Euler step count).

    Args:
        models: {name: velocity model}; all get the same ``x0`` and ``y``.
        x0: (N, *data_shape) noise shared by all models.
        y: (N,) int64 labels (-1 = unconditional) shared by all models.
        scorer: ``scorer(samples, y) -> Score``, see :func:`make_scorer`.
        steps: fixed step counts.
        adaptive: also run ``adaptive_method`` and report its measured NFE.
        batch_size: solver and straightness batch size (None = one batch).
        fixed_method: fixed-step method for ``steps``.
        adaptive_method: adaptive method.
        rtol: adaptive relative tolerance.
        atol: adaptive absolute tolerance.
        n_t: time-grid points of the straightness integral.
        guidance: classifier-free guidance scale of every solve (and of the field whose
            straightness is measured); the caller checks the models were trained for it
            (:func:`rf_core.guidance.check_guidance`).

    Returns:
        (rows in model-then-solver order, {(model, solver, steps): samples (N, *data_shape)}).
    """
    steps = tuple(steps)
    _check_sweep_args(models, x0, y, steps, adaptive, fixed_method, adaptive_method)
    settings = [(fixed_method, s) for s in steps] + ([(adaptive_method, None)] if adaptive else [])
    rows: list[EvalRow] = []
    samples: dict[SampleKey, Tensor] = {}
    for name, model in models.items():
        cells = []
        for method, s in settings:
            kw = {"rtol": rtol, "atol": atol} if s is None else {"steps": s}
            kw |= {"batch_size": batch_size, "guidance": guidance}
            res = solve_ode(model, x0, y, method=method, **kw)
            samples[(name, method, s)] = res.x1.detach().cpu()
            cells.append((method, s, res.nfe, scorer(res.x1, y)))
        # S is measured on the model's own coupling: its most accurate solve of the same x0.
        best_key = (name, adaptive_method, None) if adaptive else (name, fixed_method, max(steps))
        best, field = samples[best_key], GuidedVelocity(model, guidance)
        s_val = metrics.straightness(field, x0, best.to(x0.device), y, n_t, batch_size)
        for method, s, nfe, sc in cells:
            fields = (sc.fd, sc.class_acc, sc.swd, s_val, sc.mmd, sc.precision, sc.recall)
            rows.append(EvalRow(name, method, s, nfe, *fields, guidance=guidance))
    return rows, samples


def rows_to_markdown(rows: Sequence[EvalRow]) -> str:
    """A markdown table of sweep rows, e.g. for a Prefect artifact.

    Metric columns that are None in every row are left out; other Nones show as "–".
    """
    cols = ["model", "solver", "steps", "nfe"]
    cols += ["guidance"] if any(r.guidance for r in rows) else []
    metric_cols = ["fd", "precision", "recall", "class_acc", "swd", "mmd", "straightness"]
    cols += [c for c in metric_cols if any(getattr(r, c) is not None for r in rows)]

    def fmt(v) -> str:
        return "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(getattr(r, c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
