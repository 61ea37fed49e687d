"""The session setup in conftest.py runs once, so its temp home is the one removed at the end."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py").resolve()


def _is_conftest(module: object) -> bool:
    return Path(getattr(module, "__file__", None) or "/").resolve() == CONFTEST


def test_conftest_is_imported_once_and_owns_prefect_home(request: pytest.FixtureRequest) -> None:
    # Collection imports every test module before the first test runs, so a module that imported
    # ``tests.conftest`` would show here as a second copy with its own (never removed) temp home.
    assert not [m.__name__ for m in list(sys.modules.values()) if _is_conftest(m)]
    plugins = [p for p in request.config.pluginmanager.get_plugins() if _is_conftest(p)]
    assert len(plugins) == 1
    assert os.environ["PREFECT_HOME"] == str(plugins[0]._HOME / "prefect")
