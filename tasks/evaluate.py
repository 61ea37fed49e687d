"""Evaluation task: the NFE sweep of every model of a run, scored, plotted into files."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Mapping
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
from tasks.data import DataInput, load_data, reference_images
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
    inception: InceptionSpec | None = None,
):
    """Toys: sliced Wasserstein to fresh samples. Images: Fréchet distance in the features of a
    digit classifier trained once per dataset on the train split (``classifier``: its checkpoint;
    default: the local cache in ``cache_dir``, trained there if missing), or with ``inception``
    the standard Inception FID against training images; ``metric="none"`` scores nothing."""
    from rf_core.evaluate import make_scorer

    if dataset in TOYS:
        return make_scorer("toy", toy_name=dataset, seed=seed)
    if inception is not None and inception.metric == "none":
        return no_score
    from rf_core.frechet import FrechetEvaluator

    if inception is not None and inception.metric == "inception":
        real = reference_images(inception.data, inception.shape, inception.n_real, seed)
        evaluator = FrechetEvaluator(
            None, real, inception_weights=inception.weights, use_inception=True, device=device
        )
        return make_scorer("image", evaluator=evaluator)
    from rf_core.classifier import load_classifier

    if classifier is None:
        key, _ = classifier_key(dataset, root)
        classifier = train_or_load_classifier.fn(dataset, root, str(cache_dir), key, device=device)
    clf, _ = load_classifier(classifier, map_location=device)
    real, _ = load_data(dataset, "test", root=root)
    return make_scorer("image", evaluator=FrechetEvaluator(clf, real))


@dataclasses.dataclass(frozen=True)
class InceptionSpec:
    """How an image set without the digit classifier is scored.

    Attributes:
        metric: ``inception`` (FID on ``n_real`` training images of ``data``) or ``none``.
        data: the training data (the real side of the FID).
        shape: the model's sample shape.
        n_real: real images (a seeded subset when the set is larger).
        weights: the Inception weights file (None: looked up, see rf_core.frechet).
    """

    metric: str
    data: DataInput
    shape: tuple[int, ...]
    n_real: int
    weights: str | None = None


def no_score(samples: torch.Tensor, y: torch.Tensor):
    """The scorer of ``metric: none``: nothing beyond NFE and straightness."""
    from rf_core.evaluate import Score

    return Score()


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


def row_metrics(rows: list[EvalRow], fd_name: str = "fd") -> dict[str, float]:
    """Flat MLflow metrics of one model's rows, e.g. {"fd/euler_1": .., "nfe/dopri5": ..};
    the Fréchet distance is named ``fd_name`` (``fid_inception`` for the Inception FID)."""
    out: dict[str, float] = {}
    for r in rows:
        for field in dataclasses.fields(r):
            value = getattr(r, field.name)
            if field.name in ("model", "solver", "steps", "guidance") or value is None:
                continue
            family = fd_name if field.name == "fd" else field.name
            out[metric_name(r, family)] = float(value)
    return out


@dataclasses.dataclass(frozen=True)
class EvalJob:
    """What an NFE sweep of several models needs.

    Attributes:
        checkpoints: {model name (e.g. "1rf"): checkpoint path}; all get the same noise.
        dataset: dataset name (decides the scorer).
        out_dir: folder the figures are written to.
        root: torchvision dataset root (image datasets other than mnist5k).
        steps: Euler step counts.
        adaptive: also sample with dopri5.
        n_samples: noise draws shared by every model.
        batch_size: samples per solve (None: all at once).
        seed: seed of the shared noise and labels.
        device: where to sample.
        classifier: image datasets: checkpoint of the Fréchet classifier (default: local cache).
        inception: image sets scored with the Inception FID (metrics ``fid_inception/...``) or
            not at all (``metric="none"``), instead of the classifier.
        guidance: the sweep runs once per guidance scale (0 = unguided; the caller checked that
            every model was trained with label dropout when another scale is asked for).
    """

    checkpoints: Mapping[str, str]
    dataset: str
    out_dir: str
    root: str | None = None
    steps: tuple[int, ...] = (1, 2, 4, 8)
    adaptive: bool = True
    n_samples: int = 1000
    batch_size: int | None = None
    seed: int = 1234
    device: str = "cpu"
    classifier: str | None = None
    inception: InceptionSpec | None = None
    guidance: tuple[float, ...] = (0.0,)


@task(cache_policy=NO_CACHE)
def evaluate_models(job: EvalJob) -> SweepResult:
    """Sweep NFE for every model of ``job`` from the same noise and labels; write its plots.

    Returns:
        The rows, each model's flat MLflow metrics (the Fréchet distance named ``fd``, or
        ``fid_inception`` with ``inception``), and the figure files.
    """
    from rf_core.evaluate import nfe_sweep, sweep_inputs
    from tasks.plots import plot_quality, plot_sample_figure, plot_samples, plot_toy_trajectories

    device, dataset, seed = job.device, job.dataset, job.seed
    models = {n: load_checkpoint(p, map_location=device)[0] for n, p in job.checkpoints.items()}
    cfg = next(iter(models.values())).config
    x0, y = sweep_inputs(cfg.data_shape, job.n_samples, cfg.num_classes, seed)
    cache = Path(job.out_dir).parent / "classifiers"
    scorer = build_scorer(dataset, job.root, seed, cache, device, job.classifier, job.inception)
    rows, by_scale = [], {}
    for w in job.guidance:
        with torch.random.fork_rng():
            rows_w, by_scale[w] = nfe_sweep(
                models, x0.to(device), y.to(device), scorer, job.steps, job.adaptive,
                job.batch_size, guidance=w,
            )  # fmt: skip
        rows += rows_w
    out = Path(job.out_dir)
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
    fd_name = "fid_inception" if job.inception is not None else "fd"
    per_model = {n: row_metrics([r for r in rows if r.model == n], fd_name) for n in models}
    return SweepResult(tuple(rows), per_model, tuple(str(f) for f in figures), fd_name)
