"""``rectiflow pairs probe MODEL``: the solver screen of ``pairs.solver: {method: auto}`` on a
model, without generating anything, and the table a store records of it.

    rectiflow pairs probe runs/checkpoints/mnist5k-1rf-<id>.pt [--tolerance 1e-3] [--probe 64]
    rectiflow pairs probe models:/mnist5k-1rf/1 --config configs/mnist5k.yaml [--compile]

With ``--config`` the probe draws are those a store of that config would hold (its pairs seed,
chunk and n) and its ``pairs.solver`` gives the defaults (tolerance, probe, compile, batch); the
output then also says whether the screen would pay for itself at the config's ``pairs.n``.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

from flows.cli_errors import exit_codes
from flows.config import PairsParams, PipelineConfig, load_config
from flows.errors import InputError, bad_input
from rf_core.pair_error import REFERENCE_TOL
from rf_core.screen_result import Screen
from rf_core.solver_auto import DEFAULT_PAIR_TOLERANCE, DEFAULT_PROBE
from rf_core.solver_screen import ToleranceUnreachable, screen_solvers
from rf_core.solver_spec import SolverSpec
from rf_core.training import load_checkpoint
from storage.solver_choice import payoff_line, probe_inputs, resolve_request


def screen_lines(screen: Screen, when: str | None = None) -> list[str]:
    """What a solver screen measured, as text: the choice, the reference, one row per trial."""
    req, won = screen.request, screen.chosen_trial
    lines = [
        f"chosen by a screen: {screen.chosen.label()} ({won.nfe} NFE per pair, pair error "
        f"{won.error:.2e}) for {req.label()}" + (f", screened {when}" if when else ""),
        f"  reference dopri5 {REFERENCE_TOL:g}: {screen.reference_nfe} NFE per pair; the screen "
        f"took {screen.seconds:.1f} s and {screen.evaluations:,} sample evaluations"
        + (" (no fixed-step solver met the tolerance)" if screen.fallback else ""),
        f"  {'':2}{'solver':<22}{'nfe':>5}  {'error':>9}  {'bound':>9}  {'err_max':>9}",
    ]
    for row in screen.table():
        mark = "* " if row["chosen"] else "  "
        lines.append(
            f"  {mark}{row['solver']:<22}{row['nfe']:>5}  {row['error']:>9.2e}  "
            f"{row['bound']:>9.2e}  {row['err_max']:>9.2e}"
        )
    return [*lines, f"  (* chosen; it meets the tolerance when bound <= {req.tolerance:g})"]


def probe_request(pairs: PairsParams | None, **given: float | int | bool | None) -> SolverSpec:
    """The auto request to screen: the config's ``pairs.solver`` (its batch and compile, and its
    tolerance and probe when it is auto) with the options given on the command line.

    Raises:
        InputError: naming the option (``--tolerance: must be ...``).
    """
    base = {"method": "auto"}
    if pairs is not None:
        keep = ("batch_size", "compile", "tolerance", "probe")  # the last two: auto's only
        base |= {k: v for k, v in pairs.solver.model_dump().items() if k in keep and v is not None}
    try:
        return SolverSpec.from_dict(base | {k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        field = re.search(r"solver\['(\w+)'\]", str(e))
        raise InputError(f"--{field.group(1) if field else 'probe'}: {e}") from None


def _sizes(pairs: PairsParams) -> tuple[int, int, int]:
    return pairs.seed, pairs.chunk, pairs.n


def _model(ref: str, cfg: PipelineConfig | None, device: str):
    """MODEL loaded on ``device``: a checkpoint file, or with a config any model reference."""
    if cfg is not None:
        from flows import inputs  # brings MLflow in: only when a config names the tracking

        inputs.connect(cfg)
        ref = inputs.model_arg(ref, "MODEL", cfg).checkpoint
    elif not Path(ref).is_file():
        raise InputError(
            f"MODEL: {ref!r} is not a checkpoint file; to name an MLflow model (m-<id>, "
            "models:/<name>/<version>) pass --config with the pipeline config that tracks it"
        )
    with bad_input("MODEL"):
        return load_checkpoint(ref, map_location=device)[0]


def probe(
    model: str = typer.Argument(..., help="checkpoint file, or with --config m-<id> / models:/…"),
    config: Path | None = typer.Option(
        None, help="pipeline YAML: its pairs section sets the probe"
    ),
    tolerance: float | None = typer.Option(
        None, help=f"pair-error tolerance (default: the config's, else {DEFAULT_PAIR_TOLERANCE:g})"
    ),
    probe_draws: int | None = typer.Option(
        None,
        "--probe",
        help=f"noise draws to screen on (default: the config's, else {DEFAULT_PROBE})",
    ),
    compile_: bool | None = typer.Option(
        None, "--compile/--no-compile", help="screen the compiled model (default: the config's)"
    ),
    device: str = typer.Option("cpu", help="where to solve"),
) -> None:
    """Screen solvers on MODEL as ``pairs.solver: {method: auto}`` does; print what was measured
    and the choice. Generates nothing."""
    with exit_codes():
        cfg = load_config(config) if config is not None else None
        pairs = None if cfg is None else cfg.pairs
        request = probe_request(pairs, tolerance=tolerance, probe=probe_draws, compile=compile_)
        seed, chunk, n = (0, request.probe, request.probe) if pairs is None else _sizes(pairs)
        with bad_input("--probe"):
            request = resolve_request(request, chunk, n)
        net = _model(model, cfg, device)
        x0, y = probe_inputs(request, seed, chunk, n, net.config.data_shape, net.config.num_classes)
        try:
            screen = screen_solvers(net, x0, y, request, device=device, log=typer.echo)
        except ToleranceUnreachable as e:
            raise InputError(f"--tolerance: {e}") from e
    for line in screen_lines(screen):
        typer.echo(line)
    if pairs is not None:
        typer.echo(payoff_line(screen, n, chunk))
