"""With the default `retries: 0`, a failed trial's real error is recorded (issue 14 item 4):
Tune writes it to `error.txt` in the trial's local folder before its `on_trial_error`, and
to the storage folder (where `trial.get_error()` reads) only at its next sync."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipeline.record.recorder import NO_ERROR_TEXT, error_text_of
from pipeline.record.tracking import TAG_ERROR


class _Trial:
    """What Tune's Trial offers at `on_trial_error` time with no retries left."""

    def __init__(self, error_file: str | None):
        self.error_file = error_file

    def get_error(self) -> None:
        return None  # the storage copy is not synced yet

    def get_pickled_error(self) -> None:
        return None


def test_error_is_read_from_the_local_error_file(tmp_path: Path) -> None:
    path = tmp_path / "error.txt"
    path.write_text("Failure # 1\nsyncmodel.errors.ConfigError: train.layers: no module 'x'\n")
    assert "ConfigError: train.layers" in error_text_of(_Trial(str(path)))


def test_no_error_file_says_so() -> None:
    assert error_text_of(_Trial(None)) == NO_ERROR_TEXT


@pytest.mark.slow
def test_failed_trial_without_retries_records_its_error(tmp_path: Path, write_spec, syncstudy, monkeypatch) -> None:  # noqa: ANN001
    storage = tmp_path / "study"
    spec = write_spec(
        tmp_path / "fail.yaml", samples=1, storage=str(storage), retries=0,
        train={"epochs": 1, "n_train": 200, "width": 8}, evaluation={"max_images": 60, "pictures": False},
    )  # fmt: skip
    monkeypatch.setenv("SYNCSTUDY_FAULT", "1:raise")
    out = syncstudy("launch", str(spec), "--smoke")
    assert out.returncode == 1, out.stdout + out.stderr  # no trial finished
    (row,) = pq.read_table(storage / "trials.parquet").to_pylist()
    words = "InjectedError: injected by SYNCSTUDY_FAULT (trial 1, before training)"
    assert row["status"] == "error" and words in row["error"], row["error"]
    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    assert words in client.get_run(row["mlflow_run_id"]).data.tags[TAG_ERROR]
    got = Path(client.download_artifacts(row["mlflow_run_id"], "error.txt", str(tmp_path)))
    assert words in got.read_text() and NO_ERROR_TEXT not in got.read_text()
