"""What a trained model's MLflow directory holds: two flavors of one LoggedModel.

- ``python_function``: the sampler of :mod:`storage.tracking.sampler_model` (labels, steps,
  seed, guidance -> images), what ``mlflow.pyfunc.load_model`` and ``mlflow models serve``
  load. It ships ``rf_core`` in ``code/`` and the plain checkpoint in ``artifacts/``.
- ``pytorch``: the velocity field ``v(x, t, y)`` itself (pt2 or pickle), what
  ``mlflow.pytorch.load_model`` loads.

The signature is the sampler's (one MLmodel has one); :func:`velocity_signature` is the one the
pt2 export of the velocity field is traced with.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import mlflow
import mlflow.pytorch
import numpy as np
import pandas as pd
import torch
import torchdiffeq
from mlflow.models import Model
from mlflow.models.signature import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
from torch import nn

import rf_core

ENTRY = Path(__file__).with_name("sampler_model.py")
# What loading the sampler needs beside the rf_core it ships (a served model's environment).
REQUIREMENTS = [
    f"torch=={torch.__version__.split('+')[0]}",
    f"torchdiffeq=={torchdiffeq.__version__}",
    f"numpy=={np.__version__}",
    "pydantic>=2.7,<3",
]
# The sampler's params and their defaults: one Euler step, seed 0, unguided.
PARAMS = {"steps": ("long", 1), "seed": ("long", 0), "guidance": ("double", 0.0)}
PARAMS["method"] = ("string", "euler")


def sampler_signature(shape: tuple[int, ...]) -> ModelSignature:
    """``label`` column (one row per sample) + params -> (N, *shape) float32 samples."""
    return ModelSignature(
        inputs=Schema([ColSpec("long", "label")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *shape), "samples")]),
        params=ParamSchema([ParamSpec(k, kind, v) for k, (kind, v) in PARAMS.items()]),
    )


def velocity_signature(shape: tuple[int, ...]) -> ModelSignature:
    """(x, t, y) -> v of the velocity field (the pt2 export's dynamic batch dimension)."""
    f32, i64 = np.dtype(np.float32), np.dtype(np.int64)
    return ModelSignature(
        inputs=Schema([
            TensorSpec(f32, (-1, *shape), "x"), TensorSpec(f32, (-1,), "t"),
            TensorSpec(i64, (-1,), "y"),
        ]),
        outputs=Schema([TensorSpec(f32, (-1, *shape), "v")]),
    )  # fmt: skip


def _save_model(path, mlflow_model, *, velocity: nn.Module, checkpoint: str, **kwargs) -> None:
    """Write both flavors into ``path`` (MLflow's flavor interface, called by ``Model.log``)."""
    fmt, cfg = kwargs["serialization_format"], velocity.config
    shape, labels = tuple(cfg.data_shape), [0, 1] if cfg.num_classes > 1 else [-1, -1]
    mlflow.pyfunc.save_model(
        path, python_model=str(ENTRY), artifacts={"checkpoint": checkpoint},
        code_paths=[str(Path(rf_core.__file__).parent)], mlflow_model=mlflow_model,
        signature=sampler_signature(shape), input_example=pd.DataFrame({"label": labels}),
        pip_requirements=REQUIREMENTS,
    )  # fmt: skip
    # pt2 traces the graph: an example batch > 1 keeps the batch dimension dynamic.
    example = (
        np.zeros((2, *shape), np.float32), np.full((2,), 0.5, np.float32),
        np.array([-1, 0 if cfg.num_classes else -1], np.int64),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        torch_model = Model()
        mlflow.pytorch.save_model(
            velocity.eval(), f"{tmp}/m", mlflow_model=torch_model, serialization_format=fmt,
            input_example=example if fmt == "pt2" else None, signature=velocity_signature(shape),
            pip_requirements=REQUIREMENTS,
        )  # fmt: skip
        shutil.copytree(f"{tmp}/m/data", f"{path}/data")
    mlflow_model.add_flavor("pytorch", **torch_model.flavors["pytorch"])
    mlflow_model.save(f"{path}/MLmodel")


# A flavor in MLflow's sense: anything with save_model(path, mlflow_model, **kwargs).
FLAVOR = SimpleNamespace(save_model=_save_model, __name__="rectiflow")


def log_sampler_model(
    velocity: nn.Module, checkpoint: str, name: str, registered_name: str, fmt: str, tags: dict
):
    """Log both flavors as a LoggedModel output by the active run and register it.

    Returns:
        MLflow's ModelInfo (``model_id``, ``registered_model_version``).
    """
    return Model.log(
        None, name=name, flavor=FLAVOR, registered_model_name=registered_name, tags=tags,
        velocity=velocity, checkpoint=checkpoint, serialization_format=fmt,
    )  # fmt: skip
