"""Error classes the CLI tells apart: bad input (exit 2) and a failed stage (exit 1).

:class:`InputError` is raised by the checks that run before any work: a config, a model
reference, a store URI that cannot be used as given. Everything else that escapes a stage is a
failure of that stage (data damage, a crashed shard, a lost server); the stage runner notes on
the exception which stage and MLflow run it happened in (:func:`failed_stage`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

STAGE_NOTE = "rectiflow stage:"


class InputError(ValueError):
    """A setting or argument that cannot work as given, found before any work started.

    The message is one line in the user's words, starting with the argument or config field it
    is about (``store: ...``, ``model: ...``, ``<file>: invalid config: pairs.n: ...``).
    """


@contextmanager
def bad_input(field: str) -> Iterator[None]:
    """Re-raise a ValueError from the block as an InputError about ``field`` (prefixed once)."""
    try:
        yield
    except InputError:
        raise
    except ValueError as e:
        msg = str(e) if str(e).startswith(f"{field}:") else f"{field}: {e}"
        raise InputError(msg) from e


def note_stage(error: BaseException, stage: str, run_id: str) -> None:
    """Record on ``error`` that it ended ``stage`` (MLflow run ``run_id``); the innermost wins."""
    if failed_stage(error) is None:
        error.add_note(f"{STAGE_NOTE} {stage}" + (f" (MLflow run {run_id})" if run_id else ""))


def failed_stage(error: BaseException) -> str | None:
    """ "<stage> (MLflow run <id>)" of the stage ``error`` ended, if a stage runner noted one."""
    for note in getattr(error, "__notes__", ()):
        if note.startswith(STAGE_NOTE):
            return note.removeprefix(STAGE_NOTE).strip()
    return None
