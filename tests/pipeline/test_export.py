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
    import mlflow
    import mlflow.pyfunc
    import mlflow.pytorch
    import numpy as np
    import torch

    from syncmodel.checkpoint import load_checkpoint

    monkeypatch.delenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", raising=False)
    out = tmp_path / "best"
    assert cli.main(["export", *_args(smoke_study), "--out", str(out), "--register", "digits-best", "--alias", "prod"]) == 0
    net, _, meta = load_checkpoint(out / "model.safetensors")
    x = torch.randn(3, meta["in_channels"], meta["image_size"], meta["image_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = net(x).numpy()
    mlflow.set_registry_uri(f"sqlite:///{smoke_study / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{smoke_study / 'mlflow.db'}")
    with torch.no_grad():
        got = mlflow.pytorch.load_model("models:/digits-best@prod")(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mlflow.pyfunc.load_model("models:/digits-best@prod").predict(x.numpy()), want, rtol=1e-5, atol=1e-6)
    # every trial's run holds its pyfunc model (models from code) too
    run_id = json.loads((out / "metrics.json").read_text())["mlflow_run_id"]
    trial_model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    np.testing.assert_array_equal(trial_model.predict(x.numpy()), want)


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
