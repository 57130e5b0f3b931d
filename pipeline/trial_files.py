"""The one contract between a trial and the driver: the files a trial's final checkpoint
folder holds. The trial writes them (pipeline.trial), the driver's recorder reads and uploads
them (pipeline.record.recorder), `export` fetches them back from MLflow (pipeline.export)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass(frozen=True)
class TrialFiles:
    """The files of one trial's final checkpoint folder `folder`.

    model.safetensors: the model checkpoint (weights, config and meta: syncmodel.checkpoint);
    model.pt: the same from a release before safetensors (uploaded when an old trial has it); history.json: one record
    per epoch; final.json: the final result Tune was told (a restored trial hands it back);
    config.json / config.yaml: the full TrainConfig; report.json, neurons.parquet, pictures/:
    the evaluation (pipeline.evaluation), when it ran.
    """

    folder: Path

    MODEL = "model.safetensors"  # syncmodel.checkpoint_format.WEIGHTS (this module imports nothing)
    LEGACY_MODEL = "model.pt"  # syncmodel.checkpoint_format.LEGACY_WEIGHTS
    HISTORY = "history.json"
    FINAL = "final.json"
    CONFIG_JSON = "config.json"
    CONFIG_YAML = "config.yaml"
    REPORT = "report.json"
    NEURONS = "neurons.parquet"
    PICTURES = "pictures"
    # MLflow's model format (pyfunc from code; pipeline.record.mlflow_model): logged as the run's
    # MLflow 3 logged model `model` (`runs:/<run>/model`), not as plain artifacts.
    MLFLOW_MODEL = "mlflow_model"
    # In an epoch checkpoint (not the final one): what `train(resume=...)` continues from.
    TRAIN_STATE = "train_state.pt"
    # The config files: uploaded as the run's `config/` artifacts, not with the checkpoint.
    CONFIGS = (CONFIG_YAML, CONFIG_JSON)
    # Where each file goes in the trial's MLflow run (artifact folder; None: the run's root).
    ARTIFACTS: ClassVar[tuple[tuple[str, str | None], ...]] = (
        (CONFIG_YAML, "config"), (CONFIG_JSON, "config"), (MODEL, "checkpoint"),
        (LEGACY_MODEL, "checkpoint"),
        (REPORT, "evaluation"), (NEURONS, "evaluation"), (HISTORY, None), (PICTURES, "pictures"),
        (MLFLOW_MODEL, "model"),
    )  # fmt: skip

    @property
    def model(self) -> Path:
        return self.folder / self.MODEL

    @property
    def history(self) -> Path:
        return self.folder / self.HISTORY

    @property
    def final(self) -> Path:
        return self.folder / self.FINAL

    @property
    def config_json(self) -> Path:
        return self.folder / self.CONFIG_JSON

    @property
    def config_yaml(self) -> Path:
        return self.folder / self.CONFIG_YAML

    @property
    def report(self) -> Path:
        return self.folder / self.REPORT

    @property
    def neurons(self) -> Path:
        return self.folder / self.NEURONS

    @property
    def pictures(self) -> Path:
        return self.folder / self.PICTURES

    @property
    def train_state(self) -> Path:
        return self.folder / self.TRAIN_STATE
