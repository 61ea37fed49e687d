"""The stage runner: what every stage flow does around its own work, in one place.

A stage is one nested MLflow run (train_base, generate_pairs, train_reflow, distill, evaluate,
and the pipeline's parent run). :class:`StageRunner` connects a flow to its config's experiment;
:meth:`StageRunner.reuse` finds a FINISHED earlier run with the same stage key (when
``config.resume``); :meth:`StageRunner.run` closes runs a killed process left RUNNING, starts
the MLflow run (tagged with the Prefect flow-run id, the key, the stage's tags and params),
links it from Prefect, and yields a :class:`StageRun` for metrics and Prefect artifacts.

A stage key is a digest of :attr:`StageSpec.inputs`, the values that decide the stage's result.
They are built from the result-deciding config sections only; the ``execution`` and ``testing``
sections never enter a key (see docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel

from flows.config import PipelineConfig
from flows.errors import note_stage
from flows.inputs import connect
from rf_core.config import Evolving
from storage import tracking
from tasks.progress import artifact_key

# Sections of a config that decide where and how work runs, never what it produces.
NOT_RESULTS = frozenset({"execution", "testing"})


def stage_key(*parts: Any) -> str:
    """A short digest of everything that determines a stage's output (for reuse across runs)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def result_sections(cfg: PipelineConfig) -> dict[str, Any]:
    """The config as JSON without the sections that do not change results (the pipeline's key);
    sections on the Evolving base as their :meth:`~rf_core.config.Evolving.key_dump`."""
    return _key_dumps(cfg, cfg.model_dump(mode="json", exclude=set(NOT_RESULTS)))


def _key_dumps(model: BaseModel, data: dict[str, Any]) -> dict[str, Any]:
    for name in data:
        value = getattr(model, name)
        if isinstance(value, Evolving):  # its KEYLESS fields out, at every level
            keep = set(value.key_fields())
            data[name] = {k: v for k, v in data[name].items() if k in keep}
        if isinstance(value, BaseModel):
            _key_dumps(value, data[name])
    return data


@dataclass(frozen=True)
class StageSpec:
    """One stage run: its name, what decides its result, and what to record beside it.

    Attributes:
        name: the stage ("train_base", "generate_pairs", ...), the MLflow run name.
        inputs: the values that decide the stage's output; its key is their digest.
        tags: extra MLflow tags (the key is always tagged).
        params: nested dict logged (flattened) as MLflow params.
    """

    name: str
    inputs: tuple[Any, ...]
    tags: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return stage_key(self.name, *self.inputs)


@dataclass(frozen=True)
class StageRun:
    """The MLflow run of a stage in progress, and the Prefect artifacts it makes."""

    stage: str
    run_id: str
    experiment: str

    def metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        tracking.log_metrics([(step, values)], self.run_id)

    def table(self, kind: str, rows: Sequence[Mapping[str, Any]], description: str) -> None:
        """A Prefect table artifact keyed ``<kind>-<experiment>`` (a history across runs)."""
        key = artifact_key(kind, self.experiment)
        create_table_artifact([dict(r) for r in rows], key=key, description=description)

    def markdown(self, kind: str, title: str, text: str) -> None:
        """A Prefect markdown artifact and the same text as ``<kind>.md`` in the MLflow run."""
        tracking.log_text(text, f"{kind.replace('-', '_')}.md")
        create_markdown_artifact(f"# {title}\n\n{text}", key=artifact_key(kind, self.experiment))


class StageRunner:
    """Runs a flow's stages in its config's MLflow experiment.

    Construction registers the storage options, points MLflow at the tracking URI (failing fast
    on a server that does not answer) and creates the experiment if needed.
    """

    def __init__(self, cfg: PipelineConfig, parent_run_id: str | None = None):
        connect(cfg)
        self.cfg, self.parent_run_id = cfg, parent_run_id
        self.experiment_id = tracking.ensure_experiment(cfg.experiment, cfg.runs_dir)

    def reuse(self, spec: StageSpec) -> tracking.ModelRef | None:
        """The model of the latest FINISHED run of ``spec`` (same stage and key), if resuming."""
        if not self.cfg.resume:
            return None
        run_id = tracking.find_finished_stage(self.experiment_id, spec.name, spec.key)
        ref = tracking.run_output_model(run_id) if run_id else None
        if ref is not None:
            get_run_logger().info(
                "%s: reusing %s %s of run %s (same inputs, key %s)",
                spec.name, ref.name, ref.model_id, run_id, spec.key,
            )  # fmt: skip
        return ref

    @contextmanager
    def run(self, spec: StageSpec) -> Iterator[StageRun]:
        """The stage's MLflow run: FINISHED on success, FAILED (and noted on the error) if not."""
        tracking.mark_unfinished(self.experiment_id, spec.name, spec.key)  # left by a kill
        run_id = ""
        try:
            with tracking.stage_run(
                self.experiment_id, spec.name, parent_run_id=self.parent_run_id,
                flow_run_id=str(flow_run.id or ""), tags={tracking.TAG_KEY: spec.key, **spec.tags},
                params=spec.params,
            ) as run_id:  # fmt: skip
                self._link(spec.name, run_id)
                yield StageRun(spec.name, run_id, self.cfg.experiment)
        except Exception as e:
            note_stage(e, spec.name, run_id)
            raise

    def _link(self, stage: str, run_id: str) -> None:
        create_link_artifact(
            tracking.run_url(self.experiment_id, run_id),
            link_text=f"MLflow run {run_id} ({stage})",
            key=artifact_key("mlflow", stage),
            description="MLflow run of this stage (start the UI with the command the CLI prints)",
        )
