"""The read-only commands (`runs`, `pareto`, `export`) on a finished study: answered from the
study folder's tables (pipeline.record.finished) exactly as from MLflow, without importing
Ray, Optuna, MLflow or the orchestration; MLflow when the tables may hold less."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import cli
from pipeline.export import TrialFolder
from pipeline.lock import acquire
from pipeline.record.finished import as_run, finished_trials
from pipeline.record.tables import StudyTables, TrialRow
from pipeline.spec.types import Param

ROOT = Path(__file__).resolve().parents[2]
SEARCH = {
    "lr": Param("lr", "float", low=1e-4, high=1.0, log=True),
    "width": Param("width", "int", low=4, high=8),
}
OBJECTIVES = ["val_acc", "interpretability"]


def _both(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """stdout of the command answered from the tables, and with `--mlflow`."""
    capsys.readouterr()
    assert cli.main(args) == 0
    tables = capsys.readouterr().out
    assert cli.main([*args, "--mlflow"]) == 0
    return tables, capsys.readouterr().out


# ------------------------------------------------------------------ on a launched study
def test_the_smoke_study_is_answered_from_its_tables(smoke_study: Path) -> None:
    from pipeline.record.tracking import Tracker, resolve_target

    records = finished_trials(smoke_study, OBJECTIVES, SEARCH)
    assert records is not None
    tracker = Tracker(resolve_target(f"sqlite:///{smoke_study / 'mlflow.db'}", "digits", smoke_study), "digits")
    # the tables keep each run's start time as MLflow holds it (the order runs are listed in)
    assert [(r.run_id, r.start_time) for r in records] == [(r.run_id, r.start_time) for r in tracker.trials()]


@pytest.mark.parametrize(
    "command", [["runs"], ["runs", "--json"], ["runs", "--sort", "train_time"], ["pareto"], ["pareto", "--json"]]
)
def test_runs_and_pareto_print_the_same_from_tables_and_mlflow(
    smoke_study: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    tables, mlflow = _both([*command, str(smoke_study / "study.yaml")], capsys)
    assert tables == mlflow and tables.strip()


def test_export_writes_the_same_folder_from_the_trial_folder_and_mlflow(
    smoke_study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = str(smoke_study / "study.yaml")
    capsys.readouterr()
    assert cli.main(["export", spec, "--out", str(tmp_path / "a")]) == 0
    said_a = capsys.readouterr().out.replace(str(tmp_path / "a"), "OUT")
    assert cli.main(["export", spec, "--mlflow", "--out", str(tmp_path / "b")]) == 0
    said_b = capsys.readouterr().out.replace(str(tmp_path / "b"), "OUT")
    assert said_a == said_b
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def _modules_at_exit(args: list[str], cwd: Path) -> list[str]:
    """Which heavy modules the console entry (`syncstudy ARGS`) had imported when it exited."""
    code = (
        "import atexit, json, sys\n"
        "heavy = ('ray', 'optuna', 'mlflow', 'torch', 'pipeline.study', 'pipeline.ray_local', 'pipeline.search')\n"
        "atexit.register(lambda: print('MODULES', json.dumps([m for m in heavy if m in sys.modules])))\n"
        f"sys.argv = ['syncstudy', *{args!r}]\n"
        "from pipeline.cli import console\n"
        "console()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.rsplit("MODULES ", 1)[1])


@pytest.mark.parametrize("command", [["runs"], ["pareto"]])
def test_runs_and_pareto_from_tables_import_no_heavy_module(
    smoke_study: Path, command: list[str], tmp_path: Path
) -> None:
    assert _modules_at_exit([*command, str(smoke_study / "study.yaml")], tmp_path) == []


def test_export_from_the_trial_folder_and_verify_import_no_heavy_module(smoke_study: Path, tmp_path: Path) -> None:
    # model.safetensors is checked by syncmodel.checkpoint_format (header, sha256): no torch
    args = ["export", str(smoke_study / "study.yaml"), "--out", str(tmp_path / "out")]
    assert _modules_at_exit(args, tmp_path) == []
    assert _modules_at_exit(["export", "--verify", str(tmp_path / "out")], tmp_path) == []


def test_runs_from_mlflow_imports_neither_ray_nor_the_orchestration(smoke_study: Path, tmp_path: Path) -> None:
    assert _modules_at_exit(["runs", str(smoke_study / "study.yaml"), "--mlflow"], tmp_path) == ["mlflow"]


# ------------------------------------------------------------------ hand-built tables
def _row(
    tid: str, start: float | None = 1_700_000_000.0, run: str | None = "r1", status: str = "ok",
    metrics: dict[str, float] | None = None,
) -> TrialRow:
    return TrialRow(
        trial_id=tid, status=status, params={"lr": 0.01, "width": 8, "layers": ["a"], "k": None, "epsilon": 0.5},
        metrics=metrics or {"val_acc": 0.5}, mlflow_run_id=run, mlflow_start_time=start,
    )  # fmt: skip


def _finished(tmp_path: Path, *rows: TrialRow) -> Path:
    tables = StudyTables(tmp_path)
    for row in rows:
        tables.upsert_trial(row)
    tables.write()
    tables.compact()
    return tmp_path


def test_a_row_shows_its_params_as_mlflow_holds_them() -> None:
    run = as_run(_row("t"), OBJECTIVES, SEARCH)
    assert run.params == {
        "lr": "0.01", "width": "8", "layers": '["a"]', "k": "null", "epsilon": "0.5", "log10_lr": "-2.0",
    }  # fmt: skip


def test_a_finished_row_shows_its_final_metrics_as_mlflow_gives_them_back() -> None:
    metrics = {
        "val_acc": 0.5, "interpretability": float("inf"), "accuracy": 0.7, "test_acc": 0.7, "spread": 0.1,
        "train_loss": 1.5, "epsilon": 0.5, "modules": 3.0,
    }  # fmt: skip
    run = as_run(_row("t", metrics=metrics), OBJECTIVES, SEARCH)
    # accuracy: not logged (test_acc is it); epsilon: equal to the param, not logged;
    # train_loss: read back from the last epoch; inf: kept by SQL as the largest double
    assert run.metrics == {
        "val_acc": 0.5, "interpretability": sys.float_info.max, "test_acc": 0.7, "spread": 0.1,
        "train_loss": 1.5, "modules": 3.0,
    }  # fmt: skip


def test_a_stopped_row_shows_only_its_bare_values_and_the_last_epoch() -> None:
    metrics = {"val_acc": 0.4, "spread": 0.2, "train_loss": 2.0, "neighbours": 3.0}
    run = as_run(_row("t", status="stopped", metrics=metrics), OBJECTIVES, SEARCH)
    assert run.metrics == {"val_acc": 0.4, "train_loss": 2.0}  # spread, neighbours: epoch/ series only


def test_rows_come_in_mlflow_order_start_time_then_run_id(tmp_path: Path) -> None:
    folder = _finished(tmp_path, _row("a", 3.0, "r9"), _row("b", 1.0, "r5"), _row("c", 3.0, "r2"))
    assert [r.trial_id for r in finished_trials(folder, OBJECTIVES, SEARCH) or []] == ["b", "c", "a"]


def test_no_trials_table_is_asked_of_mlflow(tmp_path: Path) -> None:
    assert finished_trials(tmp_path, OBJECTIVES, SEARCH) is None


def test_parts_not_yet_compacted_are_asked_of_mlflow(tmp_path: Path) -> None:
    folder = _finished(tmp_path, _row("a"))
    tables = StudyTables(folder)
    tables.upsert_trial(_row("b"))
    tables.write()  # a running study (or a dead driver's) writes parts only
    assert finished_trials(folder, OBJECTIVES, SEARCH) is None


def test_a_row_without_its_run_is_asked_of_mlflow(tmp_path: Path) -> None:
    folder = _finished(tmp_path, _row("a"), _row("b", run=None))  # the store was down at its end
    assert finished_trials(folder, OBJECTIVES, SEARCH) is None


def test_tables_from_before_run_start_times_are_asked_of_mlflow(tmp_path: Path) -> None:
    folder = _finished(tmp_path, _row("a", start=None))
    assert finished_trials(folder, OBJECTIVES, SEARCH) is None


def test_a_study_with_a_live_driver_is_asked_of_mlflow(tmp_path: Path) -> None:
    folder = _finished(tmp_path, _row("a"))
    with acquire(folder):
        assert finished_trials(folder, OBJECTIVES, SEARCH) is None


def test_a_driver_started_after_the_tables_were_written_is_asked_of_mlflow(tmp_path: Path) -> None:
    folder = _finished(tmp_path, _row("a"))
    acquire(folder).release()  # a resumed driver that died before its first trial ended
    assert finished_trials(folder, OBJECTIVES, SEARCH) is None
    _finished(folder, _row("a"))  # a driver's end: the tables written again
    assert finished_trials(folder, OBJECTIVES, SEARCH) is not None


def test_the_reader_leaves_no_lock(tmp_path: Path) -> None:
    folder = _finished(tmp_path, _row("a"))
    acquire(folder).release()
    _finished(folder, _row("a"))
    assert finished_trials(folder, OBJECTIVES, SEARCH) is not None
    acquire(folder).release()  # a driver can take the folder after it (StudyLocked otherwise)


def test_the_run_start_time_round_trips_to_the_millisecond(tmp_path: Path) -> None:
    folder = _finished(tmp_path, _row("a", start=1_795_803_247.658))
    assert pq.read_table(folder / "trials.parquet").column("mlflow_start_time")[0].value == 1_795_803_247_658
    assert [r.start_time for r in finished_trials(folder, OBJECTIVES, SEARCH) or []] == [1_795_803_247_658]


# ------------------------------------------------------------------ the trial's folder
def _trial_folder(storage: Path, files: tuple[str, ...] = ("model.pt", "config.json", "config.yaml")) -> Path:
    folder = storage / "tune" / "t1" / "checkpoint_000000"
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text(name)
    return folder


def test_a_moved_study_finds_the_trial_folder_where_the_study_is_now(tmp_path: Path) -> None:
    now = tmp_path / "now"
    folder = _trial_folder(now)
    recorded = str(tmp_path / "then" / "tune" / "t1" / "checkpoint_000000")
    found = TrialFolder.of("s", recorded, now, tmp_path / "then")
    assert found is not None and found.folder == folder.resolve()


def test_a_trial_folder_outside_the_study_is_not_read(tmp_path: Path) -> None:
    outside = _trial_folder(tmp_path / "other")
    assert TrialFolder.of("s", str(outside), tmp_path / "study", tmp_path / "study") is None


def test_a_trial_folder_without_its_config_is_not_read(tmp_path: Path) -> None:
    folder = _trial_folder(tmp_path, ("model.pt",))  # an epoch checkpoint: its run has the config
    assert TrialFolder.of("s", str(folder), tmp_path, tmp_path) is None


def test_the_trial_folder_serves_files_by_their_artifact_names(tmp_path: Path) -> None:
    folder = TrialFolder.of("s", str(_trial_folder(tmp_path)), tmp_path, tmp_path)
    assert folder is not None
    got = folder.download("r1", "checkpoint/model.pt", tmp_path / "dl")
    assert got == tmp_path / "dl" / "checkpoint" / "model.pt" and got.read_text() == "model.pt"
    assert folder.has_artifact("r1", "config/config.json")
    assert not folder.has_artifact("r1", "evaluation/report.json")  # not evaluated
