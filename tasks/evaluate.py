"""Evaluation task: the NFE sweep of every model of a run, scored, plotted into files."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from rf_core.classifier import ARCH
from rf_core.config import ClassifierRecipe
from rf_core.data import TOYS
from rf_core.evaluate import EvalRow
from rf_core.guidance import scale_label
from rf_core.solver_spec import SolverSpec
from rf_core.training import load_checkpoint
from tasks.data import load_data
from tasks.results import SweepResult

SAMPLES_FIGURE = "samples_by_nfe.png"


def classifier_key(
    dataset: str, root: str | None, recipe: ClassifierRecipe | None = None
) -> tuple[str, str]:
    """(key, data digest) naming the classifier trained on ``dataset``'s train split.

    The data digest is a sha256 of the training images and labels, so a changed dataset file
    never reuses a stale classifier; the key adds the architecture version and every training
    setting (``recipe``, default ``ClassifierRecipe()``), so a new recipe trains a new one.
    """
    recipe = recipe or ClassifierRecipe()
    x, y = load_data(dataset, "train", root=root)
    h = hashlib.sha256()
    for t in (x, y):
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.contiguous().numpy().tobytes())
    data_digest = h.hexdigest()
    settings = {"arch": ARCH, **recipe.model_dump(mode="json")}
    blob = json.dumps({"dataset": dataset, "data": data_digest, **settings})
    return hashlib.sha256(blob.encode()).hexdigest(), data_digest


@task(cache_policy=NO_CACHE)
def train_or_load_classifier(
    dataset: str,
    root: str | None,
    cache_dir: str,
    key: str,
    recipe: ClassifierRecipe | None = None,
    device: str = "cpu",
) -> str:
    """Path of the classifier with ``key`` in the local cache, trained first if missing.

    The cache is the fast path on one machine; MLflow's registry (see flows.evaluate) is what
    makes later runs anywhere reuse the classifier.
    """
    from rf_core.classifier import save_classifier, train_classifier

    path = Path(cache_dir) / f"classifier-{dataset}-{key[:16]}.pt"
    if not path.is_file():
        x, y = load_data(dataset, "train", root=root)
        recipe = recipe or ClassifierRecipe()
        clf = train_classifier(x, y, recipe, device=device)
        # A concurrent run may have cached it first: same data and seed, same weights.
        extra = {"dataset": dataset, "recipe": recipe.model_dump(mode="json"), "key": key}
        with contextlib.suppress(FileExistsError):
            save_classifier(path, clf, extra=extra)
    return str(path)


def build_scorer(
    dataset: str,
    root: str | None,
    seed: int,
    cache_dir: Path,
    device: str,
    classifier: str | None = None,
):
    """Toys: sliced Wasserstein to fresh samples. Images: Fréchet distance in the features of a
    digit classifier trained once per dataset on the train split (``classifier``: its checkpoint;
    default: the local cache in ``cache_dir``, trained there if missing)."""
    from rf_core.evaluate import make_scorer

    if dataset in TOYS:
        return make_scorer("toy", toy_name=dataset, seed=seed)
    from rf_core.classifier import load_classifier
    from rf_core.frechet import FrechetEvaluator

    if classifier is None:
        key, _ = classifier_key(dataset, root)
        classifier = train_or_load_classifier.fn(dataset, root, str(cache_dir), key, device=device)
    clf, _ = load_classifier(classifier, map_location=device)
    real, _ = load_data(dataset, "test", root=root)
    return make_scorer("image", evaluator=FrechetEvaluator(clf, real))


def metric_name(row: EvalRow, field: str) -> str:
    """MLflow metric key of one field of an evaluation row, e.g. "fd/euler_4", "nfe/dopri5",
    "class_acc/euler_1_w2" (guided), "straightness" ("straightness_w2")."""
    if field == "straightness":  # a property of the (guided) field, the same in all its rows
        return field + (f"_{scale_label(row.guidance)}" if row.guidance else "")
    setting = SolverSpec(method=row.solver, steps=row.steps, guidance=row.guidance)
    return f"{field}/{setting.label()}"


def one_step_metric(dataset: str) -> str:
    """The unguided 1-step score of a dataset's models (lower is better): what makes the
    registry's ``champion``: "fd/euler_1" for images, "swd/euler_1" for 2-D toys."""
    field = "swd" if dataset in TOYS else "fd"
    return f"{field}/{SolverSpec(method='euler', steps=1).label()}"


def row_metrics(rows: list[EvalRow]) -> dict[str, float]:
    """Flat MLflow metrics of one model's rows, e.g. {"fd/euler_1": .., "nfe/dopri5": ..}."""
    out: dict[str, float] = {}
    for r in rows:
        for field in dataclasses.fields(r):
            value = getattr(r, field.name)
            if field.name in ("model", "solver", "steps", "guidance") or value is None:
                continue
            out[metric_name(r, field.name)] = float(value)
    return out


@task(cache_policy=NO_CACHE)
def evaluate_models(
    checkpoints: dict[str, str],
    dataset: str,
    out_dir: str,
    *,
    root: str | None = None,
    steps: tuple[int, ...] = (1, 2, 4, 8),
    adaptive: bool = True,
    n_samples: int = 1000,
    batch_size: int | None = None,
    seed: int = 1234,
    device: str = "cpu",
    classifier: str | None = None,
    guidance: tuple[float, ...] = (0.0,),
) -> SweepResult:
    """Sweep NFE for every model from the same noise and labels; write plots into ``out_dir``.

    Args:
        checkpoints: {model name (e.g. "1rf"): checkpoint path}.
        dataset: dataset name (decides the scorer).
        classifier: image datasets: checkpoint of the Fréchet classifier (default: local cache).
        guidance: the sweep runs once per guidance scale (0 = unguided; the caller checked that
            every model was trained with label dropout when another scale is asked for).

    Returns:
        The rows, each model's flat MLflow metrics, and the figure files.
    """
    from rf_core.evaluate import nfe_sweep, sweep_inputs
    from tasks.plots import plot_quality, plot_sample_figure, plot_samples, plot_toy_trajectories

    models = {name: load_checkpoint(p, map_location=device)[0] for name, p in checkpoints.items()}
    cfg = next(iter(models.values())).config
    x0, y = sweep_inputs(cfg.data_shape, n_samples, cfg.num_classes, seed)
    cache = Path(out_dir).parent / "classifiers"
    scorer = build_scorer(dataset, root, seed, cache, device, classifier)
    rows, by_scale = [], {}
    for w in guidance:
        with torch.random.fork_rng():
            rows_w, by_scale[w] = nfe_sweep(
                models, x0.to(device), y.to(device), scorer, steps, adaptive, batch_size,
                guidance=w,
            )  # fmt: skip
        rows += rows_w
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = [plot_quality(rows, out / "quality_vs_nfe.png")]
    if dataset not in TOYS:  # models × NFE, same noise and labels: the run's one picture
        figures.append(plot_sample_figure(by_scale[0.0], out / SAMPLES_FIGURE))
    for w, samples_w in by_scale.items():
        figures += plot_samples(samples_w, out, dataset in TOYS, guidance=w)
    if dataset in TOYS:  # the picture of what reflow does: curved paths become straight
        target, _ = load_data(dataset, "test", n_toy=len(x0), seed=seed)
        figures.append(
            plot_toy_trajectories(models, x0.to(device), target, out / "trajectories.png")
        )
    per_model = {n: row_metrics([r for r in rows if r.model == n]) for n in models}
    return SweepResult(tuple(rows), per_model, tuple(str(f) for f in figures))
