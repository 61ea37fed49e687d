"""What the ``rectiflow`` commands let through to the console from Prefect's and MLflow's logs.

- A flow or task run that fails logs its exception with the traceback (Prefect's "Encountered
  exception during execution"), before the command prints its own error line. On the console the
  traceback is dropped unless ``--debug`` / ``RECTIFLOW_DEBUG=1``: the log line itself stays, and
  the record keeps its traceback for every other handler (Prefect's API and UI get it whole).
- MLflow announces the migration of a new tracking database ("Creating initial MLflow database
  tables...") at INFO; the commands show its warnings and errors only.

Flows run by deployments or from Python are not affected: only the CLI calls these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

MIGRATION_LOGGER = "mlflow.store.db.utils"


class TracebackFilter(logging.Filter):
    """Drops the traceback from Prefect's records on the handler it is added to, unless
    ``debugging()``. Added to handlers only: a filter on a logger would take the traceback from
    every handler, Prefect's API log included."""

    def __init__(self, debugging: Callable[[], bool]):
        super().__init__()
        self.debugging = debugging

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.startswith("prefect") and not self.debugging():
            # Handlers before this one have formatted the record already (the API log handler
            # runs first: it sits on the run logger, this one on the root logger).
            record.exc_info = record.exc_text = None
        return True


def quiet_migrations() -> None:
    """MLflow's database migration messages: warnings and errors only."""
    logging.getLogger(MIGRATION_LOGGER).setLevel(logging.WARNING)


@contextmanager
def console_tracebacks(debugging: Callable[[], bool]) -> Iterator[None]:
    """Within the block, the console handlers (the root logger's) show Prefect's failures
    without their traceback unless ``debugging()``."""
    handlers = list(logging.getLogger().handlers)
    quiet = TracebackFilter(debugging)
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
