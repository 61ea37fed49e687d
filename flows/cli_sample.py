"""``rectiflow sample MODEL --out grid.png | samples.npz | folder/``: images from a trained model.

    rectiflow sample models:/mnist5k-2rf@champion --n 64 --steps 1 --out grid.png
    rectiflow sample m-... --per-class 8 --guidance 2 --seed 0 --out grid.png
    rectiflow sample runs/checkpoints/x.pt --n 50000 --out samples.npz     # for an FID tool

Every argument is checked before any sampling (bad input: one error line, exit 2, nothing
written); a seed gives the same bytes twice. Sampling is :func:`rf_core.sampling.sample`; where
the samples go, :mod:`flows.sample_out`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from flows.cli_errors import exit_codes
from flows.errors import InputError, bad_input
from flows.sample_out import Output, check_free, output_of, write_samples

DEFAULT_N = 64


@dataclass(frozen=True)
class SampleJob:
    """A checked request: the model, its labels, where the samples go, how they are drawn."""

    net: object
    name: str
    label_dropout: float
    labels: object
    solver: object
    output: Output
    nrow: int


def _labels(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"labels: {text!r} is not a comma-separated list of integers") from None


def _counts(n: int | None, per_class: int | None, labels: list[int] | None) -> int | None:
    """``n`` as sampling takes it (None with --per-class), or an InputError naming the flag."""
    if per_class is not None:
        if n is not None or labels is not None:
            raise InputError("per-class: give --per-class alone, not with --n or --labels")
        if per_class <= 0:
            raise InputError(f"per-class: must be a positive number of samples, got {per_class}")
        return None
    if n is not None and n <= 0:
        raise InputError(f"n: must be a positive number of samples, got {n}")
    return DEFAULT_N if n is None else n


def _nrow(y, per_class: int | None, labels: list[int] | None, classes: int) -> int:
    """Grid columns: one class per row with --per-class, one per column otherwise."""
    if per_class:
        return per_class
    if labels:
        return len(labels)
    return classes if classes and len(y) >= classes else math.ceil(math.sqrt(len(y)))


def prepare(model: str, out: Path, runs_dir: Path, **req) -> SampleJob:
    """Check every argument of ``rectiflow sample`` (no sampling, nothing written).

    Raises:
        InputError: naming the argument (MODEL, n, labels, per-class, guidance, steps, method,
            out) and what to do.
    """
    from flows.inputs import connect_runs, model_arg
    from rf_core.guidance import check_guidance, label_dropout_of
    from rf_core.sampling import sample_labels, sampling_solver
    from rf_core.training import load_checkpoint

    labels = _labels(req["labels"])
    n = _counts(req["n"], req["per_class"], labels)
    if req["steps"] <= 0:
        raise InputError(f"steps: must be a positive number of steps, got {req['steps']}")
    with bad_input("method"):
        solver = sampling_solver(req["method"], req["steps"])
    if model.startswith(("m-", "models:/")):
        connect_runs(runs_dir)
    ref = model_arg(model, "MODEL")
    with bad_input("MODEL"):
        net, payload = load_checkpoint(ref.checkpoint)
    name, classes = ref.model_id or ref.checkpoint, net.config.num_classes
    dropout = label_dropout_of(payload)
    with bad_input("labels"):
        y = sample_labels(n, classes, labels, req["per_class"])
        check_guidance(classes, dropout, y, 0.0, name)
    with bad_input("guidance"):
        check_guidance(classes, dropout, y[:0], req["guidance"], name)
    with bad_input("out"):
        output = output_of(out, images=net.config.kind == "unet")
        check_free(output, y, req["overwrite"])
    nrow = _nrow(y, req["per_class"], labels, classes)
    return SampleJob(net, name, dropout, y, solver, output, nrow)


def run_job(
    job: SampleJob, guidance: float, seed: int, batch_size: int, device: str
) -> tuple[list[Path], int]:
    """Sample (a progress bar on stderr when it takes more than one batch) and write; returns
    the files written and the NFE per sample."""
    import torch

    from rf_core.sampling import sample

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    columns = (TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    bar = Progress(*columns, console=Console(stderr=True), transient=True)
    with bar:
        task = bar.add_task("sampling", total=len(job.labels), visible=len(job.labels) > batch_size)
        res = sample(
            job.net.to(device), job.labels, solver=job.solver, guidance=guidance, seed=seed,
            label_dropout=job.label_dropout, batch_size=batch_size, device=device,
            progress=lambda done, total: bar.update(task, completed=done), name=job.name,
        )  # fmt: skip
    return write_samples(job.output, res.x, res.y, job.nrow), res.nfe


def sample_cmd(
    model: str = typer.Argument(
        ...,
        metavar="MODEL",
        help="m-<id>, models:/<name>/<version>, models:/<name>@champion, "
        "models:/<name>/latest or a checkpoint file",
    ),
    out: Path = typer.Option(
        ..., help="grid.png (one picture), samples.npz (x, y) or an existing folder (PNG each)"
    ),
    n: int | None = typer.Option(None, help=f"number of samples (default {DEFAULT_N})"),
    steps: int = typer.Option(1, help="solver steps (fixed-step methods)"),
    method: str = typer.Option("euler", help="ODE solver (torchdiffeq name; dopri5: adaptive)"),
    labels: str | None = typer.Option(
        None, help="labels cycled over the samples, e.g. 0,1,2; -1 = unconditional"
    ),
    per_class: int | None = typer.Option(None, help="this many samples of every class"),
    guidance: float = typer.Option(0.0, help="classifier-free guidance scale w (0 = none)"),
    seed: int = typer.Option(0, help="noise seed: the same seed gives the same samples"),
    batch_size: int = typer.Option(256, help="samples per solve"),
    device: str = typer.Option("auto", help="auto (CUDA if present), cpu, cuda:0, ..."),
    overwrite: bool = typer.Option(False, help="replace existing output files"),
    runs_dir: Path = typer.Option(Path("runs"), help="runs folder holding mlflow.db"),
) -> None:
    """Sample a trained model into a grid PNG, an npz (x in [-1, 1], y) or a folder of PNGs."""
    with exit_codes():
        req = {"n": n, "labels": labels, "per_class": per_class, "guidance": guidance}
        req |= {"steps": steps, "method": method, "overwrite": overwrite}
        if batch_size <= 0:
            raise InputError(f"batch-size: must be a positive number, got {batch_size}")
        job = prepare(model, out, runs_dir, **req)
        files, nfe = run_job(job, guidance, seed, batch_size, device)
    where = files[0] if job.output.kind != "folder" else f"{job.output.path}/ ({len(files)} PNGs)"
    setting = job.solver.model_copy(update={"guidance": guidance}).label()
    typer.echo(
        f"{len(job.labels)} samples of {job.name} ({setting}, NFE {nfe}, seed {seed}) -> {where}"
    )
