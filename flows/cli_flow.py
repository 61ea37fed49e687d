"""How a ``rectiflow`` command runs a flow: its config checked first, then the flow with progress
bars.

:func:`checked_config` loads the config with the command line's overrides, connects it to its
storage and tracking and runs the command's checks: bad input ends there with exit 2, before a
flow starts. :func:`call_flow` imports the flow only then (it brings Prefect in) and runs it with
rich progress bars; an error ends the command with one line (flows/cli_errors.py). Used by
``flows/cli.py`` and ``flows/cli_train.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from flows.cli_errors import debugging, exit_codes
from flows.cli_logging import console_tracebacks
from flows.config import PipelineConfig, load_config
from flows.errors import bad_input

console = Console(stderr=True)


def checked_config(
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


def call_flow(flow: str, *args: Any, **kwargs: Any) -> Any:
    """Run ``flow`` ("module:function", imported only now: inputs are checked, Prefect is needed)
    with progress bars; an error ends the command with one line (exit 1, or 2 for bad input the
    checks before the flow could not see). Prefect's own log of the failure comes without its
    traceback unless debugging (flows/cli_logging.py)."""
    module, name = flow.split(":")
    with exit_codes(), _Bars():
        run_flow = getattr(importlib.import_module(module), name)
        with console_tracebacks(debugging):
            return run_flow(*args, **kwargs)
