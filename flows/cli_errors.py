"""How every ``rectiflow`` command ends on an error: one line on stderr and an exit code by class.

- exit 2: bad input (:class:`~flows.errors.InputError`), found before any work started;
- exit 1: anything else: a failed stage, damaged data, a lost server. The line names the stage
  (and its MLflow run) when a stage runner noted one, and says what to run next.

``rectiflow --debug ...`` or ``RECTIFLOW_DEBUG=1`` prints the traceback before that line.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import click
import typer
from rich.console import Console

from flows.errors import InputError, failed_stage
from storage.pairstore import PairStoreError

console = Console(stderr=True)
ENV_DEBUG = "RECTIFLOW_DEBUG"
_debug = {"on": False}


def set_debug(on: bool) -> None:
    _debug["on"] = on


def debugging() -> bool:
    """``--debug`` was given, or RECTIFLOW_DEBUG is set to something other than 0/false."""
    return _debug["on"] or os.environ.get(ENV_DEBUG, "").lower() not in ("", "0", "false", "no")


def err(msg: str) -> None:
    """``error: <msg>`` as one line (long paths and ids stay greppable, never wrapped)."""
    console.print("[red]error:[/red] ", end="")
    console.print(" ".join(msg.split()), markup=False, highlight=False, soft_wrap=True)


def failure_message(e: BaseException) -> str:
    """The error line of a failure (exit 1): what failed, where, and what to run next."""
    what = str(e) if isinstance(e, PairStoreError) else f"{type(e).__name__}: {e}"
    stage = failed_stage(e)
    head = f"stage {stage} failed: " if stage else ""
    if "rectiflow pairs verify" in what:  # damaged data: the message names its repair
        return head + what
    return (
        f"{head}{what} (finished stages and done chunks are kept: run the same command again "
        f"to resume; --debug or {ENV_DEBUG}=1 shows the traceback)"
    )


@contextmanager
def exit_codes() -> Iterator[None]:
    """Turn an exception of the block into one error line and exit 2 (bad input) or 1."""
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
        raise
    except InputError as e:
        _fail(e, str(e), 2)
    except Exception as e:
        _fail(e, failure_message(e), 1)


def _fail(e: BaseException, line: str, code: int) -> None:
    if debugging():
        traceback.print_exception(e)
    err(line)
    raise typer.Exit(code) from None
