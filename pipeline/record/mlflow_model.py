"""A trial's model in MLflow's own model format, without pickled code anywhere.

- Every trial: a pyfunc model "from code": MLflow runs `mlflow_pyfunc.py` (copied into the
  folder) to load it, which rebuilds the net with `syncmodel.checkpoint.load_checkpoint` from
  the folder's `artifacts/model.safetensors` (tensors only; config and meta in its header). The folder is written here by hand, in the
  layout `mlflow.pyfunc.save_model` writes (MLflow 3.17), because `save_model` costs seconds
  per trial (it imports MLflow and infers requirements) while these files cost milliseconds;
  tests/pipeline/test_mlflow_model.py loads it with MLflow, so a layout MLflow no longer
  reads fails there. `log_trial_model` logs the folder as an MLflow 3 logged model named
  `model` whose source is the trial's run (the run's outputs list it: the UI's Models column;
  `mlflow.search_logged_models`, `models:/<model_id>` and `runs:/<run>/model` find it): the
  calls `mlflow.pyfunc.log_model` makes, minus `save_model`.
- `export --register`: the same weights once more, as `mlflow.pytorch`'s "pt2" format
  (`torch.export`), logged as the run's second logged model `registered_model`, the form the
  registry's versions point at: `mlflow.pytorch.load_model` returns a graph module, and it loads
  with torch and MLflow alone (no syncstudy, no pickled code; with
  MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false MLflow checks the archive holds only raw tensors
  and weights-only records first). Exporting costs seconds, so it is done once per run, on the
  first registration. torch refuses `.eval()`/`.train()` on an exported program's module, and
  MLflow loads TorchScript (which allows them) only through its pickle path: docs/pipeline.md,
  "Registered model".
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

FOLDER = TrialFiles.MLFLOW_MODEL  # in a trial's final checkpoint; logged as the run's model `model`
ARTIFACT = "model"  # the logged model's name: `runs:/<run>/model` resolves to it
REGISTERED = "registered_model"  # the pt2 form `export --register` logs beside it and registers
# Run tags the logged model carries too, so `search_logged_models` can select a study's models.
_COPIED_TAGS = ("syncstudy.study", "syncstudy.trial_id", "syncstudy.instance")
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
    weights: Path,
    *,
    in_channels: int,
    image_size: int,
    num_classes: int,
    example: list[Any],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the pyfunc-from-code folder `dst` for the checkpoint file `weights` (a
    model.safetensors; a legacy model.pt keeps its name, which tells the loader what it is).

    `example`: one input (nested lists, shape (1, C, H, W)) saved as the input example;
    `meta`: kept under MLmodel's `metadata` (the normalisation, class names).
    """
    dst = Path(dst)
    (dst / "artifacts").mkdir(parents=True)
    name = Path(weights).name
    try:
        os.link(weights, dst / "artifacts" / name)  # same bytes; MLflow copies them when it logs the folder
    except OSError:
        shutil.copyfile(weights, dst / "artifacts" / name)
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
                "artifacts": {"model": {"path": f"artifacts/{name}", "uri": name}},
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


def write_for_trial(folder: Path, weights: Path, data: Any) -> Path:
    """The trial's pyfunc folder (`folder`/mlflow_model) from its data bundle (shapes, one test
    image as the input example, the normalisation)."""
    example = data.test.images[:1].float().tolist()
    return write_pyfunc_folder(
        Path(folder) / FOLDER, weights, in_channels=int(data.in_channels), image_size=int(data.image_size),
        num_classes=int(data.num_classes), example=example,
        meta={"dataset": data.name, "class_names": list(data.class_names), "mean": list(data.mean),
              "std": list(data.std), "input": "float32 (N, C, H, W), normalised: (raw - mean) / std"},
    )  # fmt: skip


def _ready_model(client: Any, run_id: str, name: str) -> tuple[Any | None, list[Any]]:
    """Run `run_id`'s logged models named `name`: the oldest READY one (or None), and all."""
    from mlflow.entities import LoggedModelStatus

    experiment_id = client.get_run(run_id).info.experiment_id
    # The run id is MLflow's own hex id and `name` one of this module's constants: nothing to quote.
    found = client.search_logged_models(
        [experiment_id], filter_string=f"name = '{name}' AND source_run_id = '{run_id}'", max_results=10
    )
    ready = [m for m in found if m.status == LoggedModelStatus.READY]
    return (min(ready, key=lambda m: m.creation_timestamp) if ready else None), found


def _log_folder(client: Any, run_id: str, folder: Path, name: str) -> str:
    """Log the MLflow model folder `folder` as run `run_id`'s logged model `name` (MLflow 3:
    created with the run as its source, listed in the run's outputs, its files uploaded, then
    READY); returns the model id.

    Once per run and name: a READY model is kept as it is; a PENDING one (an upload cut off)
    gets the files again and is finalised. The model's params are the run's (the trial's
    config) and it carries the run's study, trial and instance tags.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    ready, found = _ready_model(client, run_id, name)
    if ready is not None:
        return ready.model_id
    run = client.get_run(run_id)
    if found:
        model = min(found, key=lambda m: m.creation_timestamp)
    else:
        model = client.create_logged_model(
            run.info.experiment_id, name=name, source_run_id=run_id,
            tags={k: v for k, v in run.data.tags.items() if k in _COPIED_TAGS},
            params=dict(run.data.params),
        )  # fmt: skip
    if not any(o.model_id == model.model_id for o in (run.outputs.model_outputs if run.outputs else [])):
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    client.log_model_artifacts(model.model_id, str(folder))
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return model.model_id


def log_trial_model(client: Any, run_id: str, folder: Path) -> str:
    """Log the pyfunc folder `folder` as the logged model `model` of run `run_id`; returns the
    model id. Once per run: the recorder replays a trial's end after an outage (`_log_folder`)."""
    return _log_folder(client, run_id, folder, ARTIFACT)


def exported_module(net: Any, example: Any) -> Any:
    """`net` (in eval mode) through `torch.export` with a dynamic batch, as a graph module that
    exports again to the same graph, which `mlflow.pytorch.save_model` does.

    Dead nodes are dropped first: an `icnn` net's forward mask leaves an unused autocast region
    (`wrap_with_autocast` without users) that `torch.export.save` writes without its output's
    metadata, and `torch.export.load` then refuses the archive ("Node.meta wrap_with_autocast is
    missing val field", torch 2.14).
    """
    import torch

    with torch.no_grad():
        program = torch.export.export(net.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.graph.eliminate_dead_code()
    program.graph_module.recompile()
    return program.module()


def log_registered_model(client: Any, run_id: str, weights: Path) -> str:
    """Run `run_id`'s logged model `registered_model`: the checkpoint `weights` in
    `mlflow.pytorch`'s "pt2" format, the form `export --register` registers; returns its model
    URI (`models:/<model id>`).

    Once per run: a later registration of the same trial (another name or alias) gets the same
    model. The signature and input example as in the pyfunc folder; requirements given, not
    inferred (inference takes tens of seconds), and without syncstudy: the exported graph runs
    on torch alone.
    """
    import tempfile

    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from syncmodel.checkpoint import load_checkpoint

    ready, _ = _ready_model(client, run_id, REGISTERED)
    if ready is not None:
        return f"models:/{ready.model_id}"
    net, _, meta = load_checkpoint(weights)
    shape = (-1, int(meta["in_channels"]), int(meta["image_size"]), int(meta["image_size"]))
    sig = ModelSignature(
        Schema([TensorSpec(np.dtype("float32"), shape)]),
        Schema([TensorSpec(np.dtype("float32"), (-1, int(meta["num_classes"])))]),
    )
    example = np.zeros((2, *shape[1:]), dtype=np.float32)  # batch 2: torch.export keeps it dynamic
    module = exported_module(net, torch.from_numpy(example))
    reqs = [r for r in requirements() if r != "syncstudy"]
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        folder = Path(tmp) / REGISTERED
        mlflow.pytorch.save_model(
            module, str(folder), serialization_format="pt2", signature=sig, input_example=example,
            pip_requirements=reqs,
        )  # fmt: skip
        return f"models:/{_log_folder(client, run_id, folder, REGISTERED)}"
