"""A trial's model in MLflow's format: the pyfunc-from-code folder every trial logs, and the
pt2 pytorch model `export --register` registers; both give syncmodel's logits and neither
unpickles code on load (pipeline.record.mlflow_model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.record.mlflow_model import write_pyfunc_folder
from syncmodel.checkpoint import load_checkpoint, save_checkpoint
from syncmodel.config import TrainConfig
from syncmodel.nets import build_model

SHAPE = (1, 16, 10)  # in_channels, image_size, classes (the digits smoke study's)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = TrainConfig(dataset="digits", image_size=SHAPE[1], epochs=1)
    net = build_model(config, SHAPE[0], SHAPE[2], SHAPE[1])
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    meta = {"in_channels": SHAPE[0], "num_classes": SHAPE[2], "image_size": SHAPE[1], "layers": ["block3"],
            "dataset": "digits", "class_names": [str(i) for i in range(10)], "epoch": 1}  # fmt: skip
    return save_checkpoint(path, net, config, meta)


def _inputs() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(4, SHAPE[0], SHAPE[1], SHAPE[1])).astype(np.float32)


def _reference(checkpoint: Path) -> np.ndarray:
    net, _, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        return net(torch.from_numpy(_inputs())).numpy()


def _pickles(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle", ".pth") or "pickle" in p.name]


def test_pyfunc_folder_predicts_syncmodel_logits(checkpoint: Path, tmp_path: Path) -> None:
    import mlflow.pyfunc

    example = _inputs()[:1].tolist()
    folder = write_pyfunc_folder(
        tmp_path / "m", checkpoint, in_channels=SHAPE[0], image_size=SHAPE[1], num_classes=SHAPE[2], example=example
    )
    model = mlflow.pyfunc.load_model(str(folder))
    np.testing.assert_array_equal(model.predict(_inputs()), _reference(checkpoint))
    sig = model.metadata.signature
    assert sig.inputs.inputs[0].shape == (-1, *SHAPE[:1], SHAPE[1], SHAPE[1])
    assert sig.outputs.inputs[0].shape == (-1, SHAPE[2])
    assert isinstance(model.unwrap_python_model().net, torch.nn.Module)


def test_pyfunc_folder_holds_no_pickle(checkpoint: Path, tmp_path: Path) -> None:
    folder = write_pyfunc_folder(
        tmp_path / "m", checkpoint, in_channels=SHAPE[0], image_size=SHAPE[1], num_classes=SHAPE[2], example=[]
    )
    flavor = yaml.safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # runs the code file
    assert (folder / flavor["model_code_path"]).is_file() and "python_model" not in flavor
    assert _pickles(folder) == []
    torch.load(folder / "artifacts" / "model.pt", weights_only=True)  # the only binary: weights-only


def test_registered_pt2_model_loads_with_pytorch_and_pyfunc(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc
    import mlflow.pytorch
    from mlflow import MlflowClient

    from pipeline.record.mlflow_model import log_pytorch_model
    from pipeline.record.tracking import Tracker, TrackingTarget

    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)  # MLflow checks pt2
    monkeypatch.chdir(tmp_path / "..")  # nothing may land in the current folder (./mlruns)
    here = set(Path.cwd().iterdir())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(TrackingTarget(uri, "exp", (tmp_path / "art").as_uri()), "s")
    run = tracker.client.create_run(tracker.experiment_id, run_name="t")
    model_uri = log_pytorch_model(uri, run.info.run_id, checkpoint)
    version = tracker.register(run.info.run_id, "syncnet", model_uri, description="a test", alias="champion")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    mv = client.get_model_version_by_alias("syncnet", "champion")
    assert (str(mv.version), mv.description) == (version, "a test")

    mlflow.set_registry_uri(uri)
    net = mlflow.pytorch.load_model("models:/syncnet@champion")
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(_inputs())).numpy(), _reference(checkpoint), rtol=1e-5, atol=1e-6)
    pyfunc = mlflow.pyfunc.load_model("models:/syncnet@champion")
    np.testing.assert_allclose(pyfunc.predict(_inputs()), _reference(checkpoint), rtol=1e-5, atol=1e-6)
    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "dl")))
    flavors = yaml.safe_load((local / "MLmodel").read_text())["flavors"]
    assert flavors["python_function"]["loader_module"] == "mlflow.pytorch"
    assert sorted(p.name for p in (local / flavors["pytorch"]["model_data"]).iterdir()) == ["model.pt2"]
    assert _pickles(local) == []
    assert str(tmp_path / "art") in client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location
    assert set(Path.cwd().iterdir()) - here <= {tmp_path}
