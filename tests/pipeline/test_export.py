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
        deadline = time.monotonic() + 120
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
    assert dashboard.command("sqlite:////x.db", "127.0.0.1", 5000)[-4:-2] == ["--port", "5000"]
