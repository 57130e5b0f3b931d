"""The code of a trial's MLflow model ("models from code", MLflow >= 2.12): MLflow runs this
file when it loads the model, so nothing is unpickled; the weights are `model.safetensors`
(tensors only), read by `syncmodel.checkpoint.load_checkpoint` (pipeline.record.mlflow_model),
which also reads the weights-only `model.pt` of models logged by earlier releases.

Input: float32 images (N, C, H, W), normalised as in training (the MLmodel's metadata holds
the per-channel mean and std); output: the logits (N, classes).
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class SyncModelPyfunc(PythonModel):
    def load_context(self, context: Any) -> None:
        from syncmodel.checkpoint import load_checkpoint

        self.net, self.config, self.meta = load_checkpoint(context.artifacts["model"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 - MLflow reads hints as a schema
        import numpy as np
        import torch

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.net(x).numpy()


mlflow.models.set_model(SyncModelPyfunc())
