"""Trial faults injected with SYNCSTUDY_FAULT (tests/pipeline/faults.py): an exception, a non-finite
loss, CUDA and host out-of-memory errors and a killed trial process are each recorded with
their status and error in MLflow and trials.parquet, retried from the trial's last checkpoint
(spec `retries`), and the study finishes the other trials."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.slow  # a study of six faulty trials: the whole suite only

# trial number (Tune's creation order) -> (fault, status it ends with, words of its error)
PLAN = {
    1: ("raise", "error", "InjectedError: injected by SYNCSTUDY_FAULT (trial 1, before training)"),
    2: ("nan", "diverged", "non-finite loss in epoch 1"),
    3: ("oom", "oom", "OutOfMemoryError: CUDA out of memory"),
    4: ("memory", "oom", "MemoryError: injected by SYNCSTUDY_FAULT"),
    5: ("raise@1", "ok", None),  # fails after epoch 1; the retry continues from that checkpoint
    6: ("exit@1", "ok", None),  # the trial's process dies (SIGKILL); likewise retried
}


def test_each_fault_is_recorded_and_the_study_goes_on(tmp_path: Path, write_spec, launch_driver) -> None:  # noqa: ANN001
    storage, marks = tmp_path / "study", tmp_path / "marks"
    spec = write_spec(
        tmp_path / "faults.yaml", samples=len(PLAN), storage=str(storage), retries=1,
        train={"epochs": 2, "n_train": 200, "width": 8}, evaluation={"max_images": 60, "pictures": False},
    )  # fmt: skip
    faults = ",".join(f"{n}:{kind}" for n, (kind, _, _) in PLAN.items())
    proc = launch_driver(spec, env={"SYNCSTUDY_FAULT": faults, "SYNCSTUDY_TEST_DIR": str(marks)})
    try:
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out  # some trials finished

    events = [json.loads(line) for line in (marks / "events.jsonl").read_text().splitlines()]
    ids = {e["trial"]: e["trial_id"] for e in events}
    assert sorted(ids) == sorted(PLAN), events
    starts = {n: [e["restored_epoch"] for e in events if e["trial"] == n] for n in PLAN}
    assert starts[1] == [None, None]  # retried once (retries: 1), from scratch: no checkpoint yet
    assert starts[2] == [None]  # diverged is a result, not a failure: no retry
    assert starts[5] == [None, 1] and starts[6] == [None, 1]  # retried from epoch 1's checkpoint

    rows = {r["trial_id"]: r for r in pq.read_table(storage / "trials.parquet").to_pylist()}
    assert len(rows) == len(PLAN)
    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    for n, (kind, status, words) in PLAN.items():
        row = rows[ids[n]]
        run = client.get_run(row["mlflow_run_id"])
        assert row["status"] == status == run.data.tags["syncstudy.status"], (n, kind, row["status"], row["error"])
        assert run.info.status == ("FINISHED" if status == "ok" else "FAILED")
        if words is None:
            assert row["error"] is None and row["metrics.test_acc"] is not None
            history = client.get_metric_history(run.info.run_id, "epoch/val_acc")
            assert [m.step for m in history] == [1, 2]  # epoch 1 logged once across the retry
        else:
            assert words in row["error"] and words in run.data.tags["syncstudy.error"], (n, row["error"])
    for n in (1, 3, 4):  # the full trace of a failure is kept
        assert "error.txt" in {a.path for a in client.list_artifacts(rows[ids[n]]["mlflow_run_id"])}
    assert "6 trials (1 diverged, 1 error, 2 ok, 2 oom)" in out, out
