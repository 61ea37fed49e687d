"""Training states on disk: everything a killed training needs to continue bit-identically.

A folder holds ``state-<step>.pt`` files (a ``torch.save`` of plain tensors and numbers: model,
EMA, optimizer, LR schedule, every RNG, the data source's position, the losses so far), each
with a ``state-<step>.json`` manifest written strictly after it (the marker after the data, as
in a pair store): its step, size, crc32c and the run's *fingerprint* (what must match to
resume). Both are written atomically (temp file + rename). A state is valid when its manifest
is readable and its file has the recorded size and crc32c; the newest valid one is resumed, and
a truncated or damaged newer one is skipped, named in the result. The newest ``keep_last``
states are kept.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import crc32c
import torch

from rf_core.checkpoint import save_atomically

STATE_FORMAT = "rectiflow-train-state/1"
_NAME = re.compile(r"^state-(\d+)\.pt$")


class StateMismatchError(ValueError):
    """A valid training state written for another configuration than the one resuming it.

    Attributes:
        path: the state file.
        fields: dotted names of the fingerprint entries that differ.
    """

    def __init__(self, path: Path, diffs: list[tuple[str, Any, Any]]):
        self.path, self.fields = path, [d[0] for d in diffs]
        said = "; ".join(f"{k}: {a!r} in the state, {b!r} now" for k, a, b in diffs)
        super().__init__(f"training state {path} was written by another configuration ({said})")


@dataclass(frozen=True)
class StateFile:
    """A valid state on disk: its file, step, and manifest (fingerprint, run, ...)."""

    path: Path
    step: int
    manifest: Mapping[str, Any]

    def load(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """The state's payload (``torch.load(weights_only=True)``)."""
        return torch.load(self.path, map_location=map_location, weights_only=True)


@dataclass(frozen=True)
class Latest:
    """What :meth:`TrainStates.latest` found: the newest valid state (or None) and the newer
    files it skipped as ``(path, reason)``."""

    state: StateFile | None
    skipped: tuple[tuple[Path, str], ...] = field(default_factory=tuple)


class TrainStates:
    """The training states of one stage in ``folder``.

    Args:
        folder: where the states live (created on the first save).
        keep_last: states kept; older ones are deleted after each save.
    """

    def __init__(self, folder: str | Path, keep_last: int = 3):
        if keep_last <= 0:
            raise ValueError(f"keep_last must be a positive int, got {keep_last}")
        self.folder, self.keep_last = Path(folder), keep_last

    def steps(self) -> list[int]:
        """Steps of the state files present (valid or not), newest first."""
        if not self.folder.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.folder.iterdir())
        return sorted((int(m.group(1)) for m in found if m), reverse=True)

    def path(self, step: int) -> Path:
        return self.folder / f"state-{step}.pt"

    def save(self, step: int, payload: dict[str, Any], manifest: Mapping[str, Any]) -> Path:
        """Write ``payload`` as the state of ``step``, then its manifest, then prune.

        Args:
            step: optimizer steps done.
            payload: plain tensors, numbers, strings, lists and dicts.
            manifest: JSON metadata recorded beside it (``fingerprint``, ``run_id``, ...).
        """
        path = save_atomically({"format": STATE_FORMAT, "step": step, **payload}, self.path(step))
        with open(path, "rb") as f:
            data = f.read()
        meta = {
            **manifest,
            "format": STATE_FORMAT,
            "step": step,
            "size": len(data),
            "crc32c": crc32c.crc32c(data),
        }
        _write_json(path.with_suffix(".json"), meta)
        self.prune()
        return path

    def prune(self, keep: int | None = None) -> None:
        """Delete all but the newest ``keep`` (default ``keep_last``) states, file and manifest."""
        for step in self.steps()[self.keep_last if keep is None else keep :]:
            for p in (self.path(step), self.path(step).with_suffix(".json")):
                p.unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete every state and then the folder if empty (a finished stage, a fresh start)."""
        self.prune(0)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def latest(self) -> Latest:
        """The newest valid state; newer ones that are truncated, damaged or unfinished are
        skipped and named with the reason."""
        skipped = []
        for step in self.steps():
            path = self.path(step)
            reason, manifest = _check(path)
            if reason is None:
                return Latest(StateFile(path, step, manifest), tuple(skipped))
            skipped.append((path, reason))
        return Latest(None, tuple(skipped))


def check_fingerprint(state: StateFile, fingerprint: Mapping[str, Any]) -> None:
    """Raise :class:`StateMismatchError` naming every entry of ``fingerprint`` (flattened to
    dotted names) that differs from the state's."""
    have, want = _flat(state.manifest.get("fingerprint", {})), _flat(fingerprint)
    diffs = [(k, have.get(k), want.get(k)) for k in sorted(have | want)]
    diffs = [d for d in diffs if d[1] != d[2]]
    if diffs:
        raise StateMismatchError(state.path, diffs)


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = json.loads(json.dumps(v))  # tuples and lists compare equal
    return out


def _check(path: Path) -> tuple[str | None, dict[str, Any]]:
    """(None, manifest) for a valid state, else (the reason, {})."""
    manifest_path = path.with_suffix(".json")
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        return "no manifest beside it (its writer was killed before finishing it)", {}
    except (OSError, ValueError) as e:
        return f"its manifest {manifest_path.name} is unreadable ({e})", {}
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return f"unreadable ({e})", {}
    if len(data) != manifest.get("size"):
        return f"truncated: {len(data)} bytes, {manifest.get('size')} written", {}
    if crc32c.crc32c(data) != manifest.get("crc32c"):
        return "damaged: its crc32c does not match the one recorded when it was written", {}
    return None, manifest


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
