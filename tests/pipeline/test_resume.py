"""A study whose driver is killed (SIGKILL) mid-study is finished by `launch --resume`, and
every trial appears exactly once in MLflow and in the Parquet tables."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipeline.record.tracking import EPOCH_PREFIX, TAG_ROLE, TAG_TRIAL

pytestmark = pytest.mark.slow  # kills a driver and resumes its study: the whole suite only

SAMPLES = 4
PROGRESS = re.compile(r"^\[(\d+)/\d+\] trial (\S+)")


def _kill_group(proc: subprocess.Popen) -> None:
    # The driver's own Ray (raylet, workers, agents) shares its session: leave nothing behind.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_sigkill_mid_study_then_resume_records_each_trial_once(
    tmp_path: Path, write_spec, syncstudy, searcher_trials, launch_driver  # noqa: ANN001
) -> None:
    storage = tmp_path / "study"
    spec = write_spec(
        tmp_path / "digits.yaml", samples=SAMPLES, storage=str(storage), train={"epochs": 2, "n_train": 300}
    )
    # The driver SIGKILLs itself right after recording its first trial (the `after_trial:1`
    # crash point of tests/pipeline/faults.py): a kill sent by the test after it read the
    # first progress line raced the second trial, which a quick machine recorded first.
    proc = launch_driver(spec, env={"SYNCSTUDY_CRASH_AT": "after_trial:1", "SYNCSTUDY_TEST_DIR": str(tmp_path / "marks")})
    try:
        out, _ = proc.communicate(timeout=600)  # a hang guard; the driver ends itself
    finally:
        _kill_group(proc)
    seen = out.splitlines(keepends=True)
    assert proc.returncode == -signal.SIGKILL and (tmp_path / "marks" / "after_trial_1").exists(), out
    first_done = [m.group(2) for m in map(PROGRESS.match, seen) if m]
    assert len(first_done) == 1
    # The killed driver never compacted: its trial is in the per-trial parts, which the next
    # driver (and StudyTables) reads.
    from pipeline.record.tables import StudyTables

    assert sorted(StudyTables(storage).trials) == first_done

    resumed = syncstudy("launch", str(spec), "--smoke", "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    rows = pq.read_table(storage / "trials.parquet").to_pylist()
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == SAMPLES == len(set(ids))
    assert set(first_done) <= set(ids)
    assert all(r["status"] == "ok" for r in rows)
    history = pq.read_table(storage / "history.parquet").to_pylist()
    assert sorted((h["trial_id"], h["epoch"]) for h in history) == sorted((t, e) for t in ids for e in (1, 2))
    # Tune kept two checkpoints per running trial (pipeline.study.KEEP_CHECKPOINTS); the
    # finished study keeps the final one, which the row names.
    for row in rows:
        kept = sorted((storage / "tune" / row["trial_id"]).glob("checkpoint_*"))
        assert [str(p) for p in kept] == [row["checkpoint"]], (row["trial_id"], kept)

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name("digits")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]
    assert sorted(r.data.tags[TAG_TRIAL] for r in children) == sorted(ids)
    by_id = {r["trial_id"]: r for r in rows}
    for run in children:
        assert run.info.run_id == by_id[run.data.tags[TAG_TRIAL]]["mlflow_run_id"]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, EPOCH_PREFIX + "val_acc")]
        assert steps == [1, 2]  # each epoch logged exactly once, across the two drivers
        # final values are logged once, at step 0 (the MLflow UI draws them as bars, not series)
        assert [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")] == [0]
    assert sum(1 for r in runs if r.data.tags.get(TAG_ROLE) == "study") == 1

    # Optuna's history survives: the restored searcher holds every trial, the dead driver's
    # included, with the params and objectives of the tables.
    known = searcher_trials(storage)
    for tid in ids:
        assert known[tid].state.name == "COMPLETE", (tid, known[tid].state)
        assert known[tid].values == [by_id[tid]["metrics.val_acc"], by_id[tid]["metrics.interpretability"]]
        assert all(by_id[tid][f"params.{k}"] == v for k, v in known[tid].params.items()), tid
