"""The MLflow pyfunc sampler of a rectiflow model, as MLflow's "models from code".

This file is copied into every logged model and executed when the model loads (never imported
by rectiflow itself). It needs mlflow, torch and ``rf_core``, which each model ships in its
``code/`` folder, so a model serves wherever those packages are installed. The weights come
from the model's plain checkpoint through rf_core's loader (``torch.load(weights_only=True)``),
never from a pickle.

Input: a ``label`` column, one row per image (-1 = unconditional). Params (defaults in the
model's signature): ``steps``, ``seed``, ``guidance``, ``method``. Output: (N, *data_shape)
float32 samples, images in [-1, 1].
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException

from rf_core.guidance import label_dropout_of
from rf_core.sampling import sample, sampling_solver
from rf_core.training import load_checkpoint


class RectiflowSampler(mlflow.pyfunc.PythonModel):
    """labels, steps, seed, guidance -> samples of the model's checkpoint (CUDA if present)."""

    def load_context(self, context) -> None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, payload = load_checkpoint(context.artifacts["checkpoint"], device)
        self.label_dropout = label_dropout_of(payload)

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        """(N,) labels and the params -> (N, *data_shape) float32 samples."""
        p = params or {}
        try:
            labels = torch.tensor(np.asarray(model_input["label"], dtype=np.int64))
            spec = sampling_solver(p.get("method", "euler"), p.get("steps", 1))
            res = sample(
                self.model, labels, solver=spec, seed=int(p.get("seed", 0)),
                guidance=float(p.get("guidance", 0.0)), label_dropout=self.label_dropout,
                name="this model",
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:  # a bad request, not a server fault
            raise MlflowException.invalid_parameter_value(f"{type(e).__name__}: {e}") from e
        return res.x.numpy()


mlflow.models.set_model(RectiflowSampler())
