"""Progress reporting: a Prefect progress artifact, plus optional listeners (the CLI's rich bars).

Flows and tasks create one :class:`Progress` per long stage and call :meth:`Progress.update` from
any thread.
Artifacts need a run context, so outside Prefect runs only the listeners are told.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext, TaskRunContext

log = logging.getLogger(__name__)
# Listeners get (key, done, total, description); the CLI registers a rich progress bar here.
Listener = Callable[[str, float, float, str], None]
_listeners: list[Listener] = []


def add_listener(fn: Listener) -> None:
    _listeners.append(fn)


def remove_listener(fn: Listener) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def artifact_key(*parts: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) from free-form parts."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def _in_run() -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


@dataclass
class Progress:
    """A progress artifact (0-100 %) keyed per stage; thread-safe updates.

    Attributes:
        key: artifact key (a history across runs in the Prefect UI).
        total: units of work (steps, chunks).
        description: shown next to the bar.
    """

    key: str
    total: float
    description: str = ""
    _id: UUID | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        if _in_run():
            self._id = create_progress_artifact(0.0, key=self.key, description=self.description)
        self._notify(0.0)

    def update(self, done: float, description: str | None = None) -> None:
        """Report ``done`` units out of ``total``."""
        pct = 100.0 * min(done, self.total) / max(self.total, 1)
        with self._lock:
            if self._id is not None and _in_run():
                try:
                    update_progress_artifact(self._id, pct, description=description)
                except Exception as e:  # progress must never kill the work it reports on
                    log.warning("progress artifact %s not updated: %s", self.key, e)
            self._notify(done, description)

    def _notify(self, done: float, description: str | None = None) -> None:
        for fn in list(_listeners):
            fn(self.key, done, self.total, description or self.description)
