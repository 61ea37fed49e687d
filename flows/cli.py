"""``rectiflow``: run the pipeline or one stage from a config file; inspect lineage and stores.

rectiflow run configs/mnist5k.yaml            # the whole pipeline (also `make run`)
rectiflow train-base configs/toy2d.yaml
rectiflow generate configs/toy2d.yaml --model models:/toy2d-1rf/1 [--store runs/stores/x.zarr]
rectiflow train-reflow configs/toy2d.yaml --store runs/stores/x.zarr
rectiflow distill configs/toy2d.yaml --store runs/stores/x.zarr --init-model models:/toy2d-2rf/1
rectiflow evaluate configs/toy2d.yaml --model m-... --model m-...
rectiflow lineage MODEL_OR_STORE
rectiflow compare RUN_OR_MODEL ...              # evaluation metrics side by side
rectiflow sample MODEL --n 64 --out grid.png    # or samples.npz, or a folder of PNGs
rectiflow pairs status|verify STORE

Bad input exits 2 with one error line before any work (the checks of flows/inputs.py run before a
flow starts); a failed stage exits 1 naming it. ``rectiflow --debug ...`` shows the traceback.

Data-parallel training: ``torchrun --nproc_per_node N -m flows.cli train-base|train-reflow|
distill ...`` runs the stage as N processes; rank 0 runs the flow, the other ranks only train
(tasks.ddp).
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

# The first flow call starts a temporary Prefect server; on a busy machine it needs longer than
# Prefect's default 20 s. Set before prefect is imported.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# The temporary server's telemetry fails offline with an ERROR and a traceback on every run; off
# unless the user sets the variable (true turns it back on).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from flows.cli_errors import ENV_DEBUG, debugging, exit_codes, set_debug
from flows.cli_logging import console_tracebacks, quiet_migrations
from flows.cli_pairs import pairs_app
from flows.cli_sample import sample_cmd
from flows.cli_tables import compare_table, summary_table
from flows.config import PipelineConfig, load_config
from flows.errors import InputError, bad_input

app = typer.Typer(
    help="Rectified Flow pipeline: train, generate pairs, reflow, evaluate (Prefect + MLflow).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(pairs_app, name="pairs")
app.command("sample")(sample_cmd)
console = Console(stderr=True)


@app.callback()
def main(
    debug: bool = typer.Option(
        False, "--debug", envvar=ENV_DEBUG, help="print the traceback of an error"
    ),
) -> None:
    """Rectified Flow pipeline: train, generate pairs, reflow, evaluate (Prefect + MLflow)."""
    set_debug(debug)
    quiet_migrations()


def _config(
    path: Path,
    runs_dir: Path | None,
    fresh: bool,
    check: Callable[[ModuleType, PipelineConfig], Any] | None = None,
) -> PipelineConfig:
    """The config (with the command line's overrides), connected to its storage and tracking,
    and ``check(flows.inputs, cfg)`` passed: bad input ends here with exit 2, before a flow
    starts. flows.inputs is imported only once the config is good (it brings MLflow in)."""
    with exit_codes():
        cfg = load_config(path)
        if runs_dir is not None or fresh:
            data = cfg.model_dump(mode="json")
            data["runs_dir"] = str(runs_dir) if runs_dir is not None else data["runs_dir"]
            data["resume"] = data["resume"] and not fresh
            cfg = load_config(data)
        from flows import inputs

        with bad_input("tracking"):  # a tracking server that does not answer
            inputs.connect(cfg)
        if check is not None:
            check(inputs, cfg)
    return cfg


class _Bars:
    """Rich progress bars fed by tasks.progress listeners (training steps, generated chunks)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), console=console
        )
        self.tasks: dict[str, Any] = {}

    def __call__(self, key: str, done: float, total: float, description: str) -> None:
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(description, total=total)
        self.progress.update(self.tasks[key], completed=done, description=description)

    def __enter__(self) -> _Bars:
        from tasks import progress  # imports prefect: not before a flow runs

        self.progress.start()
        progress.add_listener(self)
        return self

    def __exit__(self, *exc: object) -> None:
        from tasks import progress

        progress.remove_listener(self)
        self.progress.stop()


def _call(flow: str, *args: Any, **kwargs: Any) -> Any:
    """Run ``flow`` ("module:function", imported only now: inputs are checked, Prefect is needed)
    with progress bars; an error ends the command with one line (exit 1, or 2 for bad input the
    checks before the flow could not see). Prefect's own log of the failure comes without its
    traceback unless debugging (flows/cli_logging.py)."""
    module, name = flow.split(":")
    with exit_codes(), _Bars():
        run_flow = getattr(importlib.import_module(module), name)
        with console_tracebacks(debugging):
            return run_flow(*args, **kwargs)


def _ui_hints(cfg: PipelineConfig) -> None:
    from storage.tracking import ui_command

    out = Console(soft_wrap=True)  # commands must stay copy-pasteable on one line
    out.print("\nOpen the results:")
    mlflow_ui = ui_command(cfg.runs_dir, cfg.tracking.uri)
    if not mlflow_ui.startswith("open "):  # a local store: the command starts the UI on :5000
        mlflow_ui += "   then http://127.0.0.1:5000"
    out.print(f"  MLflow:  {mlflow_ui}")
    out.print("  Prefect: prefect server start   then http://127.0.0.1:4200")


@app.command()
def run(
    config: Path = typer.Argument(..., help="pipeline YAML, e.g. configs/mnist5k.yaml"),
    runs_dir: Path | None = typer.Option(None, help="override the config's runs folder"),
    fresh: bool = typer.Option(False, help="retrain everything instead of reusing stages"),
) -> None:
    """Run the whole pipeline: 1-RF, (pairs, reflow) x rounds, evaluation."""

    def check(inputs: ModuleType, cfg: PipelineConfig) -> None:
        from flows.train_states import check_pipeline

        inputs.check_dask(cfg)
        inputs.pipeline_inputs(cfg)
        check_pipeline(cfg)

    cfg = _config(config, runs_dir, fresh, check)
    start = time.perf_counter()
    result = _call("flows.pipeline:pipeline", cfg)
    out = Console()
    out.print(summary_table(result.rows, result.fd_name))
    for m in result.models:
        out.print(f"  {m.name}: {m.registered}  ({m.uri})")
    if result.figure:
        out.print(f"samples (models × NFE): {result.figure}")
    out.print(f"pipeline finished in {time.perf_counter() - start:.0f} s")
    _ui_hints(cfg)


def _train(
    config: Path,
    runs_dir: Path | None,
    fresh: bool,
    check: Callable[[ModuleType, PipelineConfig], Any],
    flow: str,
    **kwargs: Any,
) -> Any:
    """A training command: checked, then run. Under torchrun, ranks > 0 follow rank 0's
    training instead (returns None), and rank 0 releases them if it trains nothing."""
    if _follower(config):
        return None
    try:
        return _call(flow, _config(config, runs_dir, fresh, check), **kwargs)
    finally:
        _release(config)


def _follower(config: Path) -> bool:
    """Under torchrun, a rank > 0 trains what rank 0 sends it, here (True when it did)."""
    from tasks import ddp

    world = ddp.torchrun_world()
    if world is None or world.is_main:
        return False
    from flows.train_states import train_devices

    with exit_codes():
        ddp.follow("env://", world, train_devices(load_config(config))[ddp.local_rank()])
    return True


def _release(config: Path) -> None:
    from tasks import ddp

    if ddp.torchrun_world() is None:
        return
    from flows.train_states import train_devices

    try:
        device = train_devices(load_config(config))[0]
    except InputError:
        device = "cpu"
    ddp.release_followers(device)


@app.command("train-base")
def train_base_cmd(config: Path, runs_dir: Path | None = None, fresh: bool = False) -> None:
    """Train 1-RF on the config's dataset."""

    def check(inputs: ModuleType, cfg: PipelineConfig) -> None:
        from flows.train import base_plan

        base_plan(cfg, inputs.base_inputs(cfg))

    ref = _train(config, runs_dir, fresh, check, "flows.train:train_base")
    if ref is not None:
        Console().print(f"1-RF: {ref.registered} {ref.uri}")


@app.command()
def generate(
    config: Path,
    model: str = typer.Option(..., help="checkpoint path, m-<id> or models:/<name>/<version>"),
    store: str | None = typer.Option(None, help="pair store URI; the same URI resumes"),
    runs_dir: Path | None = None,
) -> None:
    """Generate (or resume) a pair store from a model."""

    def check(inputs: ModuleType, cfg: PipelineConfig) -> None:
        inputs.check_dask(cfg)
        inputs.generate_inputs(cfg, model, store)

    cfg = _config(config, runs_dir, False, check)
    res = _call("flows.generate:generate_pairs", cfg, model=model, store=store)
    Console().print(
        f"pair set {res.uri} complete: n={res.n} solver {res.solver} digest {res.digest}"
    )


@app.command("train-reflow")
def train_reflow_cmd(
    config: Path,
    store: str = typer.Option(..., help="complete pair store to train on"),
    init_model: str | None = typer.Option(None, help="model to start from (default: source)"),
    runs_dir: Path | None = None,
    fresh: bool = False,
) -> None:
    """Train (k+1)-RF on a pair store generated by k-RF."""

    def check(inputs: ModuleType, cfg: PipelineConfig) -> None:
        from flows.train import reflow_plan

        reflow_plan(cfg, inputs.reflow_inputs(cfg, store, init_model))

    flow = "flows.train:train_reflow"
    ref = _train(config, runs_dir, fresh, check, flow, store=store, init_model=init_model)
    if ref is not None:
        Console().print(f"{ref.k}-RF: {ref.registered} {ref.uri}")


@app.command("distill")
def distill_cmd(
    config: Path,
    store: str = typer.Option(..., help="complete pair store to train on"),
    init_model: str = typer.Option(..., help="the k-RF model to distill (and start from)"),
    runs_dir: Path | None = None,
    fresh: bool = False,
) -> None:
    """Distill k-RF into a 1-step model on a pair store (the config's distill section)."""

    def check(inputs: ModuleType, cfg: PipelineConfig) -> None:
        from flows.train import distill_plan

        distill_plan(cfg, inputs.distill_inputs(cfg, store, init_model))

    flow = "flows.train:train_distill"
    ref = _train(config, runs_dir, fresh, check, flow, store=store, init_model=init_model)
    if ref is not None:
        Console().print(f"{ref.name}: {ref.registered} {ref.uri}")


@app.command("evaluate")
def evaluate_cmd(
    config: Path,
    model: list[str] = typer.Option(..., help="model to evaluate (repeat for several)"),
    runs_dir: Path | None = None,
) -> None:
    """NFE sweep of one or more models from the same noise."""
    cfg = _config(config, runs_dir, False, lambda inputs, c: inputs.evaluate_inputs(c, model))
    res = _call("flows.evaluate:evaluate", cfg, models=model)
    Console().print(summary_table(res.rows, res.fd_name))


@app.command()
def lineage(
    target: str = typer.Argument(..., metavar="MODEL_OR_STORE"),
    runs_dir: Path = typer.Option(Path("runs"), help="runs folder holding mlflow.db"),
) -> None:
    """Print the chain: models, pair sets built from them, models trained on those, metrics."""
    from flows.inputs import connect_runs
    from flows.lineage import lineage_of, render

    with exit_codes():
        connect_runs(runs_dir)
        lines = render(lineage_of(target))
    out = Console(soft_wrap=True, highlight=False)  # long ids and URIs stay on one line
    for line in lines:
        out.print(line)


@app.command()
def compare(
    targets: list[str] = typer.Argument(..., metavar="RUN_OR_MODEL..."),
    runs_dir: Path = typer.Option(Path("runs"), help="runs folder holding mlflow.db"),
) -> None:
    """Evaluation metrics of models or pipeline runs side by side (a pipeline run expands to
    every model it evaluated)."""
    from flows.inputs import connect_runs
    from storage import tracking

    with exit_codes():
        connect_runs(runs_dir)
        with bad_input("RUN_OR_MODEL"):  # lookups only: every ValueError is about a target
            evals = [e for t in targets for e in tracking.evaluations(t)]
    Console(width=max(200, Console().width)).print(compare_table(evals))


if __name__ == "__main__":
    app()
