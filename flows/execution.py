"""The ``execution:`` section of a pipeline config: where and how work runs, never what it makes.

Devices, the task runner, the Dask cluster, storage credentials, shard retries and progress
granularity change how long a run takes and where it runs, not a single byte of its models or
pairs. So no stage's resume key reads this section (``flows.stage``: keys are built from the
result-deciding sections only), and a store generated on threads resumes on Dask. See
docs/configuration.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Settings of this section that lived elsewhere before it existed (now ``execution.<name>``).
FORMER_PLACES = (
    "devices", "pairs.task_runner", "pairs.dask_address", "pairs.dask_workers",
    "pairs.dask_shards_per_worker", "pairs.dask_timeout_s", "pairs.storage_options",
    "pairs.retries", "pairs.retry_delay_s", "pairs.progress_every",
)  # fmt: skip


class ExecutionParams(BaseModel):
    """Where and how a run works (never part of a resume key).

    Attributes:
        devices: "auto" (every CUDA device, else the CPU) or a list such as ["cuda:0", "cuda:1"].
        train_devices: data-parallel training processes, one per device: the first
            ``train_devices`` of ``devices`` (list "cpu" twice to train with 2 processes on the
            CPU). The batch of a step is the training section's ``batch_size`` whatever the
            number, so it changes no resume key; a training state resumes only with the number
            that wrote it. Under torchrun the number is torchrun's.
        task_runner: "thread" (one shard task per local device, in this process) or "dask".
        dask_address: scheduler of an existing Dask cluster ("tcp://10.0.0.5:8786"); None
            starts a LocalCluster for the run (one worker per CUDA device, else ``dask_workers``).
        dask_workers: LocalCluster worker processes (1 thread each) when there is no CUDA device.
        dask_shards_per_worker: shards per Dask worker: a lost worker loses only its shards.
        dask_timeout_s: seconds to reach ``dask_address`` before failing.
        storage_options: fsspec options per protocol, e.g. ``{"s3": {"endpoint_url": ...}}``;
            registered for this process and the processes it starts. Credentials are better
            left to the environment (AWS_ACCESS_KEY_ID, ...) than written into a config.
        retries: retries of a failed generation shard task.
        retry_delay_s: delays before each retry (the last repeats).
        progress_every: chunks generated between two progress updates (one call per group).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    devices: Literal["auto"] | tuple[str, ...] = "auto"
    train_devices: int = Field(1, gt=0)
    task_runner: Literal["thread", "dask"] = "thread"
    dask_address: str | None = Field(
        None, pattern=r"^([a-z]+://)?(\[[0-9A-Fa-f:]+\]|[^\s:/\[\]]+):\d+$"
    )
    dask_workers: int = Field(2, gt=0)
    dask_shards_per_worker: int = Field(4, gt=0)
    dask_timeout_s: float = Field(30.0, gt=0)
    storage_options: dict[str, dict[str, Any]] = {}
    retries: int = Field(2, ge=0)
    retry_delay_s: tuple[float, ...] = (1.0, 5.0)
    progress_every: int = Field(4, gt=0)

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: str | tuple[str, ...]) -> str | tuple[str, ...]:
        if v != "auto" and (not v or any(not d.startswith(("cpu", "cuda", "mps")) for d in v)):
            raise ValueError(f"devices must be 'auto' or a list like ['cuda:0', 'cpu'], got {v}")
        return v

    @field_validator("storage_options")
    @classmethod
    def _protocols(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        bad = [k for k in v if not k.isalnum()]
        if bad:
            raise ValueError(f"keys must be fsspec protocols such as 's3' or 'gcs', got {bad}")
        return v

    @model_validator(mode="after")
    def _dask_only(self) -> ExecutionParams:
        if self.dask_address and self.task_runner != "dask":
            raise ValueError(
                "dask_address is set but task_runner is 'thread'; set task_runner: dask"
            )
        return self
