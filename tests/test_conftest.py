"""The session setup in conftest.py runs once, so its temp home is the one removed at the end."""

from __future__ import annotations

import os
import sys


def test_conftest_is_imported_once_and_owns_prefect_home() -> None:
    # Collection imports every test module before the first test runs, so a module that imported
    # ``tests.conftest`` would show here as a second copy with its own (never removed) temp home.
    assert "tests.conftest" not in sys.modules
    home = sys.modules["conftest"]._HOME
    assert os.environ["PREFECT_HOME"] == str(home / "prefect")
