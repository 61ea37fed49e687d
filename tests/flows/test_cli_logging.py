"""The CLI's console filter: Prefect's failure records lose their traceback on the console only."""

from __future__ import annotations

import logging

import pytest

from flows.cli_logging import TracebackFilter, quiet_migrations


class Lines(logging.Handler):
    """Keeps every record it handles, formatted."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def failing_log(name: str, debug: bool) -> tuple[Lines, Lines]:
    """Log an exception the way Prefect's engine does: an API-like handler on the run logger
    first, then a console handler carrying the filter."""
    logger = logging.getLogger(name)
    logger.propagate, logger.handlers = False, []
    api, console = Lines(), Lines()
    console.addFilter(TracebackFilter(lambda: debug))
    logger.addHandler(api)
    logger.addHandler(console)
    try:
        raise ValueError("chunk 1 is corrupt")
    except ValueError:
        logger.exception("Encountered exception during execution: %r", "boom")
    return api, console


def test_console_keeps_the_line_and_drops_the_traceback_the_api_keeps_both():
    api, console = failing_log("prefect.flow_runs.test_cli_logging", debug=False)
    assert len(console.lines) == 1 and "Encountered exception" in console.lines[0]
    assert "Traceback" not in console.lines[0]
    assert "Traceback" in api.lines[0] and "chunk 1 is corrupt" in api.lines[0]


@pytest.mark.parametrize(
    ("name", "debug"), [("prefect.task_runs.test_cli_logging", True), ("dask.test", False)]
)
def test_debug_and_other_libraries_keep_their_traceback(name, debug):
    _, console = failing_log(name, debug)
    assert "Traceback" in console.lines[0] and "chunk 1 is corrupt" in console.lines[0]


def test_migration_messages_are_quiet_but_warnings_pass():
    quiet_migrations()
    logger = logging.getLogger("mlflow.store.db.utils")
    assert not logger.isEnabledFor(logging.INFO) and logger.isEnabledFor(logging.WARNING)
