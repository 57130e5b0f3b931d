"""`syncstudy export`: the folder's files and manifest, its guards, the model registry, and
`dashboard` serving the study's store on loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.commands import dashboard
from pipeline.export import MANIFEST, verify
from syncmodel.errors import SyncStudyError

DIGITS = Path(__file__).resolve().parents[2] / "studies" / "digits.yaml"


def _args(storage: Path) -> list[str]:
    return [str(DIGITS), "--smoke", "--tracking-uri", f"sqlite:///{storage / 'mlflow.db'}"]


def test_export_named_trial_with_manifest_and_registry(
    smoke_study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.parquet as pq
    from mlflow import MlflowClient

    trials = pq.read_table(smoke_study / "trials.parquet").to_pylist()
    worst = min(trials, key=lambda r: r["metrics.test_acc"])
    out = tmp_path / "named"
    code = cli.main(["export", *_args(smoke_study), "--out", str(out), "--trial", worst["trial_id"], "--register", "digits-smoke"])
    assert code == 0
    assert f"trial {worst['trial_id']} as asked" in capsys.readouterr().out
    verify(out)
    names = {line.split("  ", 1)[1] for line in (out / MANIFEST).read_text().splitlines()}
    assert names == {p.name for p in out.iterdir()} - {MANIFEST}
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["trial_id"] == worst["trial_id"] and meta["mlflow_run_id"] == worst["mlflow_run_id"]
    card = (out / "README.md").read_text()
    assert worst["trial_id"] in card and "load_checkpoint" in card

    (out / "config.json").write_text("{}")  # tampered: the manifest notices
    with pytest.raises(SyncStudyError, match="sha256"):
        verify(out)

    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_study / 'mlflow.db'}")
    versions = client.search_model_versions("name = 'digits-smoke'")
    assert [v.run_id for v in versions] == [worst["mlflow_run_id"]]
    assert client.get_model_version_by_alias("digits-smoke", "champion").description.startswith("study 'digits'")


def test_registered_model_predicts_the_exported_logits(
    smoke_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registered version loads with pickle deserialization refused and gives the exported
    checkpoint's logits exactly (the exported graph calls the same ATen kernels as the eager
    net, on the same CPU). The trial's run holds two logged models, its own `model` and the
    registered form `registered_model`, whichever names and how often the trial is registered."""
    import mlflow
    import mlflow.pyfunc
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow import MlflowClient

    from syncmodel.checkpoint import load_checkpoint

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # MLflow 3.17's default is true
    out = tmp_path / "best"
    assert cli.main(["export", *_args(smoke_study), "--out", str(out), "--register", "digits-best", "--alias", "prod"]) == 0
    net, _, meta = load_checkpoint(out / "model.safetensors")
    x = torch.randn(3, meta["in_channels"], meta["image_size"], meta["image_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = net(x).numpy()
    uri = f"sqlite:///{smoke_study / 'mlflow.db'}"
    mlflow.set_registry_uri(uri)
    mlflow.set_tracking_uri(uri)
    loaded = mlflow.pytorch.load_model("models:/digits-best@prod").to("cpu")
    with torch.no_grad():
        got = loaded(x).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(mlflow.pyfunc.load_model("models:/digits-best@prod").predict(x.numpy()), want)
    # every trial's run holds its pyfunc model (models from code) too
    run_id = json.loads((out / "metrics.json").read_text())["mlflow_run_id"]
    trial_model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    np.testing.assert_array_equal(trial_model.predict(x.numpy()), want)

    again = tmp_path / "again"
    assert cli.main(["export", *_args(smoke_study), "--out", str(again), "--register", "digits-best", "--alias", "again"]) == 0
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    first, second = (client.get_model_version_by_alias("digits-best", a) for a in ("prod", "again"))
    assert second.run_id == first.run_id == run_id and second.source == first.source
    experiment_id = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
    assert sorted(m.name for m in models) == ["model", "registered_model"]
    (registered,) = (m for m in models if m.name == "registered_model")
    assert first.source == f"models:/{registered.model_id}"
    listed = [v for v in json.loads(registered.tags["mlflow.modelVersions"]) if v["name"] == "digits-best"]
    assert listed == [{"name": "digits-best", "version": str(v.version)} for v in (first, second)]


def test_export_guards(smoke_study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep me")
    assert cli.main(["export", *_args(smoke_study), "--out", str(busy)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (busy / "x").read_text() == "keep me"
    assert cli.main(["export", *_args(smoke_study), "--out", str(tmp_path / "n"), "--trial", "nope"]) == 2
    assert "no such trial" in capsys.readouterr().err
    assert not (tmp_path / "n").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    assert cli.main(["export", "--study", "never-launched", "--out", str(tmp_path / "m")]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_store_on_loopback(smoke_study: Path) -> None:
    port = _free_port()
    cmd = [sys.executable, "-m", "pipeline.cli", "dashboard", *_args(smoke_study), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}" in first
        deadline = time.monotonic() + 600  # a hang guard: the wait is on /health answering
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert dashboard.command("127.0.0.1", 5000)[-4:-2] == ["--port", "5000"]


def test_front_default_is_the_best_second_objective_within_a_point_of_the_best_first() -> None:
    from pipeline.record.summary import choose_on_front
    from pipeline.record.tracking import TrialRecord

    def r(tid: str, acc: float, interp: float, status: str = "ok") -> TrialRecord:
        return TrialRecord(tid, "run-" + tid, status, {}, {"val_acc": acc, "interpretability": interp})

    records = [r("a", 0.950, 0.10), r("b", 0.945, 0.30), r("c", 0.935, 0.90), r("d", 0.999, 0.99, "stopped")]
    chosen, front = choose_on_front(records, [("val_acc", "max"), ("interpretability", "max")])
    assert [t.trial_id for t in front] == ["a", "b", "c"]  # all on the front; stopped d never counts
    assert chosen.trial_id == "b"  # c is 1.5 points below the best accuracy
