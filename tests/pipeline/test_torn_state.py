"""Tune's experiment state survives a torn write (pipeline.record.state): the driver keeps the
last whole set of Tune's state files, `--resume` puts it back when a file in `tune/` was cut
short (a full disk while Tune wrote it), and the study ends with every trial once; a full
disk ends the study with one line that says how to resume it."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipeline.paths import EXPERIMENT_DIR, GOOD_STATE_DIR
from pipeline.record.state import disk_full, keep_good_state, restore_good_state
from pipeline.record.tracking import TAG_ROLE, TAG_TRIAL
from syncmodel.errors import SyncStudyError


def _state(storage: Path, n: int) -> Path:
    """A stand-in for Tune's state files: an experiment_state JSON and a searcher pickle."""
    exp = storage / EXPERIMENT_DIR
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "experiment_state-a.json").write_text(json.dumps({"trial_data": list(range(n)), "pad": "x" * 4000}))
    (exp / "searcher-state-a.pkl").write_bytes(pickle.dumps({"trials": list(range(n))}))
    (exp / "tuner.pkl").write_bytes(pickle.dumps({"tuner": n}))
    return exp



def test_the_keeper_spends_at_most_a_twentieth_of_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """StateKeeper copies at most once a second, and waits 19 times as long as its last copy
    took (its share of the driver's loop stays under 5% as Tune's state grows)."""
    from pipeline.record import callback

    clock = [100.0]
    calls: list[float] = []
    cost = {"s": 0.01}

    def keep(self: object) -> None:
        calls.append(clock[0])
        clock[0] += cost["s"]

    monkeypatch.setattr(callback.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(callback.StateKeeper, "_keep", keep)
    keeper = callback.StateKeeper("unused")

    def run(seconds: float) -> None:
        end = clock[0] + seconds
        while clock[0] < end:
            keeper.on_step_end(0, [])
            clock[0] += 0.05

    run(3.0)
    assert 3 <= len(calls) <= 4  # cheap copies: the one-second floor
    calls.clear()
    cost["s"] = 0.5  # a large state: a copy takes half a second
    run(30.0)
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert len(calls) >= 2 and min(gaps) >= 0.5 / 0.05
    assert sum(cost["s"] for _ in calls) / 30.0 <= 0.06

def _cut(path: Path) -> None:
    # What ENOSPC leaves: the first pages of the file, the rest never written.
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_whole_state_is_kept_and_a_torn_one_is_not(tmp_path: Path) -> None:
    exp = _state(tmp_path, 1)
    seen: dict[str, tuple[int, int]] = {}
    assert keep_good_state(tmp_path, seen)
    assert not keep_good_state(tmp_path, seen)  # unchanged: no copy
    _state(tmp_path, 2)
    _cut(exp / "experiment_state-a.json")
    assert not keep_good_state(tmp_path, seen)  # torn: the kept copy stays the last whole one
    kept = json.loads((tmp_path / GOOD_STATE_DIR / "experiment_state-a.json").read_text())
    assert kept["trial_data"] == [0]


def test_resume_puts_the_last_good_state_back(tmp_path: Path) -> None:
    exp = _state(tmp_path, 1)
    assert keep_good_state(tmp_path)
    _state(tmp_path, 2)
    _cut(exp / "searcher-state-a.pkl")
    lines: list[str] = []
    assert restore_good_state(tmp_path, out=lines.append) == ["searcher-state-a.pkl"]
    # The whole set comes back (one consistent snapshot), the torn file is kept aside.
    assert json.loads((exp / "experiment_state-a.json").read_text())["trial_data"] == [0]
    assert pickle.loads((exp / "searcher-state-a.pkl").read_bytes()) == {"trials": [0]}
    assert (exp / "searcher-state-a.pkl.damaged").is_file() and len(lines) == 1


def test_whole_state_is_left_alone(tmp_path: Path) -> None:
    _state(tmp_path, 1)
    assert restore_good_state(tmp_path) == []


def test_torn_state_without_a_copy_says_what_to_do(tmp_path: Path) -> None:
    exp = _state(tmp_path, 1)
    _cut(exp / "experiment_state-a.json")
    with pytest.raises(SyncStudyError, match="another --storage"):
        restore_good_state(tmp_path)


def test_disk_full_is_recognised_through_wrappers() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("The Ray Tune run failed") from inner
    except RuntimeError as outer:
        assert disk_full(outer)
    assert disk_full("OSError: [Errno 28] Error writing bytes to file")
    assert not disk_full(RuntimeError("InjectedError"))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_resume_after_a_torn_experiment_state_records_each_trial_once(
    tmp_path: Path, write_spec, syncstudy, launch_driver  # noqa: ANN001
) -> None:
    """Issue 14 item 3: the driver dies after its first trial and Tune's newest experiment
    state is cut to its first half (what ENOSPC left on a full disk). Before: `--resume` hit a
    JSON error, started over, deleted a run and exited 130 forever. Now it resumes from the
    kept copy and every trial is in the tables and MLflow exactly once."""
    storage, marks = tmp_path / "study", tmp_path / "marks"
    samples = 3
    spec = write_spec(
        tmp_path / "torn.yaml", samples=samples, storage=str(storage),
        train={"epochs": 1, "n_train": 200, "width": 8}, evaluation={"max_images": 60, "pictures": False},
    )  # fmt: skip
    proc = launch_driver(spec, env={"SYNCSTUDY_CRASH_AT": "after_trial:1", "SYNCSTUDY_TEST_DIR": str(marks)})
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        _kill_group(proc)
    assert proc.returncode == -signal.SIGKILL, out
    exp = storage / EXPERIMENT_DIR
    newest = max(exp.glob("experiment_state-*.json"))
    assert (storage / GOOD_STATE_DIR).is_dir(), out
    _cut(newest)

    resumed = syncstudy("launch", str(spec), "--smoke", "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "damaged" in resumed.stderr and (exp / (newest.name + ".damaged")).is_file()
    rows = pq.read_table(storage / "trials.parquet").to_pylist()
    ids = sorted(r["trial_id"] for r in rows)
    assert len(ids) == samples == len(set(ids)) and {r["status"] for r in rows} == {"ok"}, rows
    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    exp_id = client.get_experiment_by_name("digits").experiment_id
    trials = [r for r in client.search_runs([exp_id], max_results=1000) if r.data.tags.get(TAG_ROLE) == "trial"]
    assert sorted(r.data.tags[TAG_TRIAL] for r in trials) == ids
