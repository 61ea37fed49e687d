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
(tasks.ddp). The training commands are flows/cli_train.py; how a command checks its config and
runs a flow, flows/cli_flow.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import ModuleType

# The first flow call starts a temporary Prefect server; on a busy machine it needs longer than
# Prefect's default 20 s. Set before prefect is imported.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# The temporary server's telemetry fails offline with an ERROR and a traceback on every run; off
# unless the user sets the variable (true turns it back on).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import typer
from rich.console import Console

from flows.cli_errors import ENV_DEBUG, exit_codes, set_debug
from flows.cli_flow import call_flow, checked_config
from flows.cli_logging import quiet_migrations
from flows.cli_pairs import pairs_app
from flows.cli_sample import sample_cmd
from flows.cli_tables import compare_table, summary_table
from flows.cli_train import distill_cmd, train_base_cmd, train_reflow_cmd
from flows.config import PipelineConfig
from flows.errors import bad_input

app = typer.Typer(
    help="Rectified Flow pipeline: train, generate pairs, reflow, evaluate (Prefect + MLflow).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(pairs_app, name="pairs")
app.command("sample")(sample_cmd)


@app.callback()
def main(
    debug: bool = typer.Option(
        False, "--debug", envvar=ENV_DEBUG, help="print the traceback of an error"
    ),
) -> None:
    """Rectified Flow pipeline: train, generate pairs, reflow, evaluate (Prefect + MLflow)."""
    set_debug(debug)
    quiet_migrations()


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

    cfg = checked_config(config, runs_dir, fresh, check)
    start = time.perf_counter()
    result = call_flow("flows.pipeline:pipeline", cfg)
    out = Console()
    out.print(summary_table(result.rows, result.fd_name))
    for m in result.models:
        out.print(f"  {m.name}: {m.registered}  ({m.uri})")
    if result.figure:
        out.print(f"samples (models × NFE): {result.figure}")
    out.print(f"pipeline finished in {time.perf_counter() - start:.0f} s")
    _ui_hints(cfg)


app.command("train-base")(train_base_cmd)  # commands listed in --help in pipeline order


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

    cfg = checked_config(config, runs_dir, False, check)
    res = call_flow("flows.generate:generate_pairs", cfg, model=model, store=store)
    Console().print(
        f"pair set {res.uri} complete: n={res.n} solver {res.solver} digest {res.digest}"
    )


app.command("train-reflow")(train_reflow_cmd)
app.command("distill")(distill_cmd)


@app.command("evaluate")
def evaluate_cmd(
    config: Path,
    model: list[str] = typer.Option(..., help="model to evaluate (repeat for several)"),
    runs_dir: Path | None = None,
) -> None:
    """NFE sweep of one or more models from the same noise."""
    cfg = checked_config(
        config, runs_dir, False, lambda inputs, c: inputs.evaluate_inputs(c, model)
    )
    res = call_flow("flows.evaluate:evaluate", cfg, models=model)
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
