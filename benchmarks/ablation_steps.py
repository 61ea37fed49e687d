"""The steps of the RF++ ablation: find a pipeline run's outputs, make pair stores, train, score.

Every step uses the pipeline's own building blocks (``PairStore`` + ``generate_chunks`` for
pairs, ``PairStream`` + ``fit`` for training, ``tasks.evaluate.evaluate_models`` for scoring), so
a variant differs from the pipeline's 2-RF only in the lever it changes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flows.config import PipelineConfig, load_config
from rf_core.config import TrainConfig
from rf_core.data import TOYS
from rf_core.models import build_model
from rf_core.training import checkpoint_sha256, fit, load_checkpoint, save_checkpoint
from storage.generate import generate_chunks
from storage.pairstore import PairStore, PairStoreError
from storage.stream import PairStream

# The seed's generate_paired_data solve (see benchmarks.pairgen.seed_recipe), as a store solver.
SEED_RECIPE_SOLVER = {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5, "batch_size": 256}


@dataclass(frozen=True)
class RunInputs:
    """What a pipeline run left that the ablation starts from.

    Attributes:
        cfg: the pipeline config of that run.
        base_ckpt: 1-RF checkpoint (pair source and 2-RF initialisation).
        store: URI of the default pair store generated from ``base_ckpt``.
        classifier: Fréchet classifier checkpoint (None for 2-D toys).
        reflow_ckpt: the pipeline's 2-RF checkpoint trained on ``store``, if found.
    """

    cfg: PipelineConfig
    base_ckpt: Path
    store: str
    classifier: str | None
    reflow_ckpt: Path | None


def _one(paths: list[Path], what: str, option: str) -> Path:
    if len(paths) != 1:
        found = ", ".join(str(p) for p in paths) or "none"
        raise ValueError(f"need exactly one {what}, found {found}; name it with {option}")
    return paths[0]


def _init_sha(payload: dict) -> str | None:
    init = (payload.get("extra") or {}).get("init")
    return checkpoint_sha256(init) if init and Path(init).is_file() else None


def locate(
    cfg: PipelineConfig,
    base_ckpt: str | None = None,
    store: str | None = None,
    classifier: str | None = None,
) -> RunInputs:
    """Find the 1-RF checkpoint, its pair store, the classifier and the 2-RF of a pipeline run.

    Args:
        cfg: config of the run (``cfg.runs`` is searched).
        base_ckpt, store, classifier: explicit paths; found under ``cfg.runs`` when None.

    Raises:
        ValueError: naming the missing or ambiguous output and the option that names it.
    """
    runs = cfg.runs
    if base_ckpt is None:
        found = sorted((runs / "checkpoints").glob(f"{cfg.experiment}-1rf-*.pt"))
        base = _one(found, f"1-RF checkpoint in {runs / 'checkpoints'}", "--base-ckpt")
    else:
        base = Path(base_ckpt)
    if not base.is_file():
        raise ValueError(f"--base-ckpt: {base} does not exist")
    sha = checkpoint_sha256(base)
    if store is None:
        stores = []
        for p in sorted((runs / "stores").glob("*.zarr")):
            try:
                s = PairStore.open(str(p))
            except PairStoreError:
                continue
            if s.is_finalized and s.source["checkpoint_sha256"] == sha:
                stores.append(p)
        store = str(_one(stores, f"finished pair store from {base.name} in {runs}", "--store"))
    if cfg.data.dataset in TOYS:
        classifier = None
    elif classifier is None:
        found = sorted((runs / "eval" / "classifiers").glob(f"classifier-{cfg.data.dataset}-*.pt"))
        classifier = str(_one(found, f"classifier in {runs / 'eval'}", "--classifier"))
    reflow = None
    for p in sorted((runs / "checkpoints").glob(f"{cfg.experiment}-2rf-*.pt")):
        _, payload = load_checkpoint(p)
        # By name: the store may have been copied; names are unique per source model.
        same_store = Path((payload["extra"] or {}).get("store") or "").name == Path(store).name
        if same_store and _init_sha(payload) == sha:
            reflow = p
    return RunInputs(cfg, base, store, classifier, reflow)


def ensure_store(
    uri: str, like: PairStore, n: int, solver: dict[str, Any], model: torch.nn.Module, log=print
) -> tuple[str, float]:
    """Create (or resume) a store like ``like`` (same source model, seed, chunk) and fill it.

    The noise and labels of chunk i depend on (seed, i) only, so chunk i of this store has
    exactly the inputs of chunk i of ``like``; with ``like``'s solver its pairs are identical,
    so those chunks are copied from ``like`` instead of solved again.

    Returns:
        (uri, seconds spent generating in this call).
    """
    store = PairStore.open_or_create(
        uri, n=n, chunk=like.chunk, sample_shape=like.sample_shape, seed=like.seed,
        source=like.source, solver=solver, dataset=like.attrs["dataset"],
        num_classes=like.num_classes,
    )  # fmt: skip
    seconds = 0.0
    if store.solver == like.solver and not store.is_finalized:
        # Same seed, chunk and solver: like's chunks ARE this store's first chunks; copy them.
        nfe = like.nfe()
        for i in range(min(like.n_chunks, store.n_chunks)):
            if not store.is_done(i) and like.chunk_bounds(i) == store.chunk_bounds(i):
                store.write_chunk(i, *like.read_chunk(i), int(nfe[i]))
    if not store.is_finalized:
        log(f"generating {len(store.missing_chunks())} chunks into {uri} with {solver}")
        stats = generate_chunks(model, store)
        store.finalize()
        seconds = stats.seconds
        log(f"  {stats.chunks_done} chunks, {nfe_per_pair(store):.1f} NFE/pair, {seconds:.0f} s")
    return uri, seconds


def nfe_per_pair(store: PairStore) -> float:
    """Model evaluations each pair cost: the store's NFE over the number of solver batches."""
    bs = store.solver.batch_size
    batches = sum(-(-(b - a) // bs) for a, b in map(store.chunk_bounds, range(store.n_chunks)))
    return float(store.nfe().sum()) / batches


def train_2rf(
    inputs: RunInputs, train: TrainConfig, store: str, init: bool, out: Path, log=print
) -> tuple[Path, float]:
    """Train 2-RF exactly as ``tasks.train.train_reflow_model`` does, without MLflow logging.

    Args:
        inputs: the run's outputs (model config, 1-RF checkpoint).
        train: optimisation settings of this variant.
        store: pair store to stream.
        init: initialise from the 1-RF checkpoint (else from the seeded random init).
        out: checkpoint to write (replaced if present).
        log: progress printer (every 250 steps).

    Returns:
        (checkpoint path, training seconds).
    """
    start = time.perf_counter()
    with torch.random.fork_rng():  # the same seeded init as the pipeline's train task
        torch.manual_seed(train.seed)
        model = build_model(inputs.cfg.model)
    stream = PairStream(store, train.batch_size, seed=train.seed)

    def progress(step: int, loss: float) -> None:
        if step % 250 == 0 or step == train.steps:
            took = time.perf_counter() - start
            log(f"  step {step}/{train.steps} loss {loss:.4f} ({took:.0f} s)")

    init_from = inputs.base_ckpt if init else None
    result = fit(model, stream, train, callback=progress, init_from=init_from)
    extra = {"k": 2, "store": store, "init": str(inputs.base_ckpt) if init else None}
    save_checkpoint(out, result.model, train, extra=extra, overwrite=True)
    return out, time.perf_counter() - start


def score(inputs: RunInputs, name: str, ckpt: Path, out_dir: Path) -> dict[str, float]:
    """The pipeline's evaluation of one model: same noise, labels, classifier and sweep.

    Returns:
        Flat metrics, e.g. {"fd/euler_1": .., "class_acc/euler_1": .., "straightness": ..}.
    """
    from tasks.evaluate import EvalJob, evaluate_models

    e, d = inputs.cfg.evaluate, inputs.cfg.data
    res = evaluate_models.fn(EvalJob(
        {name: str(ckpt)}, d.dataset, str(out_dir), root=d.root, steps=e.steps,
        adaptive=e.adaptive, n_samples=e.n_samples, batch_size=e.batch_size, seed=e.seed,
        device="cpu", classifier=inputs.classifier,
    ))  # fmt: skip
    return dict(res.metrics[name])


def claim(lock: Path) -> bool:
    """Take ``lock`` for this process unless a live process holds it (parallel runs share out)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    try:
        pid = int(lock.read_text())
        os.kill(pid, 0)  # raises when that process is gone: a stale lock
        return pid == os.getpid()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        lock.write_text(str(os.getpid()))
        return True


def load_pipeline_config(path: str, runs_dir: str | None) -> PipelineConfig:
    """The pipeline config, with its runs folder replaced when ``runs_dir`` is given."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if runs_dir is not None:
        data["runs_dir"] = str(Path(runs_dir).resolve())
    return load_config(data)
