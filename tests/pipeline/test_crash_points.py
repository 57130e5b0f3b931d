"""The driver SIGKILLed at three points (SYNCSTUDY_CRASH_AT, tests/pipeline/faults.py): before the first
result, mid-study after a recorded trial, and while a trial's checkpoint is being written.
`launch --resume` finishes each study: every trial once in MLflow and in the tables, each
epoch logged once, and the Optuna searcher keeps the trials the dead driver finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from tune_snapshot import SnapshotTrial, wait_for_snapshot

from pipeline.record.tracking import EPOCH_PREFIX, TAG_ROLE, TAG_STATUS, TAG_TRIAL

pytestmark = pytest.mark.slow  # kills its driver at crash points and resumes: the whole suite only

SAMPLES, EPOCHS = 3, 2


def _epoch_1_checkpoint_of_trial_1(trials: dict[str, SnapshotTrial]) -> bool:
    return any(t.name.startswith("1_") and "checkpoint_000000" in t.checkpoints for t in trials.values())


def _kill_group(proc: subprocess.Popen) -> None:
    # The dead driver's own Ray (raylet, workers) shares its session: leave nothing behind.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# The third point, mid-study after a recorded trial (`SYNCSTUDY_CRASH_AT=after_trial:1`), is
# tests/pipeline/test_resume.py.
@pytest.mark.parametrize("point", ["before_first_result", "checkpoint_write"])
def test_sigkill_then_resume(
    point: str, tmp_path: Path, write_spec, syncstudy, searcher_trials, launch_driver, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    storage, marks = tmp_path / "study", tmp_path / "marks"
    spec = write_spec(
        tmp_path / "crash.yaml", samples=SAMPLES, storage=str(storage),
        train={"epochs": EPOCHS, "n_train": 200, "width": 8}, evaluation={"max_images": 60, "pictures": False},
    )  # fmt: skip
    env = {"SYNCSTUDY_CRASH_AT": point, "SYNCSTUDY_TEST_DIR": str(marks)}
    if point == "checkpoint_write":
        # Tune snapshots every 2 s here instead of its paced default (10 s at least): the kill
        # below waits for a snapshot that holds epoch 1's checkpoint, and sooner is cheaper.
        env["TUNE_GLOBAL_CHECKPOINT_S"] = "2"
    proc = launch_driver(spec, env=env)
    marker = marks / point.replace(":", "_")
    try:
        if point == "checkpoint_write":
            deadline = time.monotonic() + 300
            while not marker.exists():  # trial 1 paused between its model.safetensors's temp file and rename
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()  # type: ignore[union-attr]
                time.sleep(0.2)
            # Kill once Tune's snapshot (what --resume restores) names trial 1's epoch-1
            # checkpoint: the moment this test is about, observed rather than waited for.
            wait_for_snapshot(storage, _epoch_1_checkpoint_of_trial_1, proc)
            os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)  # the driver points SIGKILL the driver themselves
    finally:
        _kill_group(proc)
    assert proc.returncode == -signal.SIGKILL and marker.exists(), out
    from pipeline.record.tables import StudyTables  # the killed driver's per-trial parts

    before = [r for r in StudyTables(storage).trials.values() if r.status != "running"]
    finished_before = {r.trial_id: r for r in before}
    assert len(finished_before) == (1 if point.startswith("after_trial") else 0), before

    monkeypatch.setenv("SYNCSTUDY_TEST_DIR", str(marks))  # the trials' start events; no crash now
    resumed = syncstudy("launch", str(spec), "--smoke", "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    rows = pq.read_table(storage / "trials.parquet").to_pylist()
    ids = [r["trial_id"] for r in rows]
    assert len(ids) == SAMPLES == len(set(ids)) and all(r["status"] == "ok" for r in rows), rows
    assert set(finished_before) <= set(ids)
    history = pq.read_table(storage / "history.parquet").to_pylist()
    assert sorted((h["trial_id"], h["epoch"]) for h in history) == sorted((t, e) for t in ids for e in range(1, EPOCHS + 1))
    assert not list(storage.rglob("*.tmp"))  # no half-written file in the study's storage

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id], max_results=100)
    children = [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]
    assert sorted(r.data.tags[TAG_TRIAL] for r in children) == sorted(ids)
    by_id = {r["trial_id"]: r for r in rows}
    for run in children:
        assert run.data.tags[TAG_STATUS] == "ok" and run.info.run_id == by_id[run.data.tags[TAG_TRIAL]]["mlflow_run_id"]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, EPOCH_PREFIX + "val_acc")]
        assert steps == list(range(1, EPOCHS + 1))  # each epoch once, across the two drivers
        assert len(client.get_metric_history(run.info.run_id, "test_acc")) == 1
    assert sum(1 for r in runs if r.data.tags.get(TAG_ROLE) == "study") == 1

    # The restored searcher knows every trial, those of the dead driver included, with the
    # params the tables hold and their objectives told.
    known = searcher_trials(storage)
    assert set(ids) <= set(known)
    for tid in ids:
        trial = known[tid]
        assert trial.state == TrialState.COMPLETE, (tid, trial.state)
        assert trial.values == [by_id[tid]["metrics.val_acc"], by_id[tid]["metrics.interpretability"]]
        for name, value in trial.params.items():
            assert by_id[tid][f"params.{name}"] == value, (tid, name)
    if point == "checkpoint_write":
        events = [json.loads(line) for line in (marks / "events.jsonl").read_text().splitlines()]
        assert [e["restored_epoch"] for e in events if e["trial"] == 1] == [None, 1]
