"""A study folder that was moved or copied reads its own store and artifacts (`--study NAME`
with `runs/NAME/study.yaml` naming the folder it was launched in), with a warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline import cli


def test_moved_study_reads_its_own_store(
    smoke_study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    moved = tmp_path / "elsewhere" / "runs" / "digits"
    shutil.copytree(smoke_study, moved)
    # The copy is told apart from the original: one trial's run renamed in the copy only.
    client = MlflowClient(tracking_uri=f"sqlite:///{moved / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits")
    runs = client.search_runs([exp.experiment_id], "tags.`syncstudy.role` = 'trial'")
    client.set_tag(runs[0].info.run_id, "syncstudy.status", "error")
    away = smoke_study.with_name(smoke_study.name + "-away")
    smoke_study.rename(away)  # the original is gone while the copy is read
    try:
        monkeypatch.chdir(moved.parent.parent)
        capsys.readouterr()
        # --mlflow: the store itself (the tables, which hold the finished study, would answer)
        assert cli.main(["runs", "--study", "digits", "--json", "--mlflow"]) == 0
        out = capsys.readouterr()
        listed = {t["run_id"]: t["status"] for t in json.loads(out.out)}
        assert listed[runs[0].info.run_id] == "error"
        assert f"reading the study from where it is now, {moved}" in out.err
        # from the tables and the trial's folder, found in the copy (the original is gone)
        assert cli.main(["export", "--study", "digits", "--out", str(tmp_path / "x")]) == 0
        assert (tmp_path / "x" / "model.pt").is_file()
        assert cli.main(["export", "--study", "digits", "--out", str(tmp_path / "y"), "--register", "m"]) == 2
        assert "was moved" in capsys.readouterr().err
        assert not smoke_study.exists()  # nothing was written where the study used to be
    finally:
        away.rename(smoke_study)
