"""A trial's model in MLflow's own model format, without pickled code anywhere.

- Every trial: a pyfunc model "from code" (`model/` in its run): MLflow runs
  `mlflow_pyfunc.py` (copied into the folder) to load it, which rebuilds the net with
  `syncmodel.checkpoint.load_checkpoint` from the folder's weights-only `artifacts/model.pt`.
  The folder is written here by hand, in the layout `mlflow.pyfunc.save_model` writes
  (MLflow 3.17), because `save_model` costs seconds per trial (it imports MLflow and infers
  requirements) while these files cost milliseconds; tests/pipeline/test_mlflow_model.py
  loads it with MLflow, so a layout MLflow no longer reads fails there.
- `export --register`: the same weights as `mlflow.pytorch`'s "pt2" format (`torch.export`),
  which `mlflow.pytorch.load_model` reads after checking that the archive holds only
  weights-only records (MLflow refuses pickled models unless MLFLOW_ALLOW_PICKLE_DESERIALIZATION
  is set). Exporting costs seconds, so it is done once, for the registered trial.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from pipeline.trial_files import TrialFiles

FOLDER = TrialFiles.MLFLOW_MODEL  # in a trial's final checkpoint; logged as the run's `model/`
ARTIFACT = "model"
CODE = Path(__file__).with_name("mlflow_pyfunc.py")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def requirements() -> tuple[str, ...]:
    """What a model server installs: syncstudy (syncmodel) and the torch/MLflow it ran with."""
    out = []
    for package in ("mlflow", "torch", "numpy"):
        version = _version(package)
        if version:
            out.append(f"{package}=={version.split('+')[0]}")
    return (*out, "syncstudy")


def _tensor_spec(shape: list[int]) -> str:
    return json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": shape}}])


def signature(in_channels: int, image_size: int, num_classes: int) -> dict[str, Any]:
    """The MLmodel `signature`: float32 (-1, C, H, W) → float32 logits (-1, classes)."""
    return {
        "inputs": _tensor_spec([-1, in_channels, image_size, image_size]),
        "outputs": _tensor_spec([-1, num_classes]),
        "params": None,
    }


def write_pyfunc_folder(
    dst: Path,
    model_pt: Path,
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    example: list[Any],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the pyfunc-from-code folder `dst` for the weights-only checkpoint `model_pt`.

    `example`: one input (nested lists, shape (1, C, H, W)) saved as the input example;
    `meta`: kept under MLmodel's `metadata` (the normalisation, class names).
    """
    dst = Path(dst)
    (dst / "artifacts").mkdir(parents=True)
    weights = dst / "artifacts" / "model.pt"
    try:
        os.link(model_pt, weights)  # same bytes; MLflow copies them when it logs the folder
    except OSError:
        shutil.copyfile(model_pt, weights)
    shutil.copyfile(CODE, dst / CODE.name)
    reqs = list(requirements())
    python = platform.python_version()
    (dst / "requirements.txt").write_text("\n".join(reqs) + "\n")
    (dst / "python_env.yaml").write_text(
        yaml.safe_dump({"python": python, "build_dependencies": ["pip", "setuptools", "wheel"],
                        "dependencies": ["-r requirements.txt"]}, sort_keys=False)
    )  # fmt: skip
    (dst / "conda.yaml").write_text(
        yaml.safe_dump({"channels": ["conda-forge"], "dependencies": [f"python={python}", "pip", {"pip": reqs}],
                        "name": "mlflow-env"}, sort_keys=False)
    )  # fmt: skip
    (dst / "input_example.json").write_text(json.dumps(example))
    (dst / "serving_input_example.json").write_text(json.dumps({"inputs": example}))
    size = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
    mlmodel = {
        "flavors": {
            "python_function": {
                "artifacts": {"model": {"path": "artifacts/model.pt", "uri": "model.pt"}},
                "code": None,
                "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                "loader_module": "mlflow.pyfunc.loaders.code_model",
                "model_code_path": CODE.name,
                "python_version": python,
                "streamable": False,
            }
        },
        "is_signature_from_type_hint": False,
        "metadata": meta or None,
        "mlflow_version": _version("mlflow"),
        "model_size_bytes": size,
        "model_uuid": uuid.uuid4().hex,
        "saved_input_example_info": {
            "artifact_path": "input_example.json",
            "serving_input_path": "serving_input_example.json",
            "type": "ndarray",
        },
        "signature": signature(in_channels, image_size, num_classes),
        "type_hint_from_example": False,
        "utc_time_created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f"),
    }
    (dst / "MLmodel").write_text(yaml.safe_dump(mlmodel, sort_keys=False))
    return dst


def write_for_trial(folder: Path, model_pt: Path, data: Any) -> Path:
    """The trial's pyfunc folder (`folder`/mlflow_model) from its data bundle (shapes, one test
    image as the input example, the normalisation)."""
    example = data.test.images[:1].float().tolist()
    return write_pyfunc_folder(
        Path(folder) / FOLDER, model_pt, in_channels=int(data.in_channels), image_size=int(data.image_size),
        num_classes=int(data.num_classes), example=example,
        meta={"dataset": data.name, "class_names": list(data.class_names), "mean": list(data.mean),
              "std": list(data.std), "input": "float32 (N, C, H, W), normalised: (raw - mean) / std"},
    )  # fmt: skip


def log_pytorch_model(uri: str, run_id: str, model_pt: Path, name: str = "pytorch_model") -> str:
    """Log the checkpoint as `mlflow.pytorch` "pt2" model of `run_id`; returns its model URI.

    `torch.export` with a dynamic batch dimension; the signature and input example as in the
    pyfunc folder. Requirements are given, not inferred (inference takes tens of seconds).
    """
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from syncmodel.checkpoint import load_checkpoint

    net, _, meta = load_checkpoint(model_pt)
    shape = (-1, int(meta["in_channels"]), int(meta["image_size"]), int(meta["image_size"]))
    sig = ModelSignature(
        Schema([TensorSpec(np.dtype("float32"), shape)]),
        Schema([TensorSpec(np.dtype("float32"), (-1, int(meta["num_classes"])))]),
    )
    example = np.zeros((2, *shape[1:]), dtype=np.float32)  # batch 2: torch.export keeps it dynamic
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # The logged model is created here, in the run's experiment: left to log_model, it goes to
    # the active (default) experiment, whose artifacts are ./mlruns of the current folder.
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = client.get_run(run_id).info.experiment_id
    logged = client.create_logged_model(experiment_id=experiment_id, name=name, source_run_id=run_id)
    with torch.no_grad():
        info = mlflow.pytorch.log_model(
            net, name=name, run_id=run_id, model_id=logged.model_id, serialization_format="pt2",
            signature=sig, input_example=example, pip_requirements=list(requirements()),
        )  # fmt: skip
    return info.model_uri
