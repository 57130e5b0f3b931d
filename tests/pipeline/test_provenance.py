"""Provenance of a trial's row (issue 24): what the trial measured lands in trials.parquet's
columns and its run's `syncstudy.<key>` tags, from its result or, for a trial that failed
before its first result, from the note on its exception; a real CPU allocation failure is
recorded as `oom` (issue 27); `runs`/`pareto` mark the trials of another commit; the commit is
measured once per process and is None outside a git checkout."""

from __future__ import annotations

import subprocess
import traceback
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fake_tracker import FakeTracker

from pipeline.record import provenance as prov
from pipeline.record.finished import as_run
from pipeline.record.recorder import StudyRecorder, classify_error
from pipeline.record.tables import TRIALS, TrialRow
from pipeline.record.tracking import TrackingTarget
from syncmodel.config import TrainConfig

MEASURED = {
    "commit": "0123456789abcdef0123456789abcdef01234567", "dirty": True, "torch": "2.99.0+test",
    "device": "cuda:1 (Test Card)", "data_version": "shapes generator 2",
}  # fmt: skip


def _recorder(tmp_path: Path) -> tuple[StudyRecorder, FakeTracker]:
    tracker = FakeTracker()
    recorder = StudyRecorder(
        study="s", target=TrackingTarget(uri="sqlite:///unused.db", experiment="s"), parent_id="p",
        storage=str(tmp_path), base=TrainConfig(), search_params={}, objectives=["val_acc"], total=2,
        quiet=True, tracker=tracker,  # type: ignore[arg-type]
    )  # fmt: skip
    return recorder, tracker


def _rows(tmp_path: Path, recorder: StudyRecorder) -> dict[str, dict[str, Any]]:
    recorder.tables.compact()
    return {r["trial_id"]: r for r in pq.read_table(tmp_path / TRIALS).to_pylist()}


def _cpu_oom_trace() -> str:
    """The trace of a real failed CPU allocation (1 EiB: no address space holds it, so it
    fails at once and touches no memory), noted as the trainable notes a failing trial."""
    import torch

    try:
        torch.empty(2**60, dtype=torch.uint8)
    except RuntimeError as exc:
        exc.add_note(prov.note(MEASURED))
        return "".join(traceback.format_exception(exc))
    raise AssertionError("a 1 EiB allocation succeeded")


def test_a_result_s_provenance_lands_in_the_row_and_the_run_tags(tmp_path: Path) -> None:
    recorder, tracker = _recorder(tmp_path)
    result = {"final": 1, "status": "ok", "val_acc": 0.5, "end_time": 1_700_000_010.0, **MEASURED}
    assert recorder.finish("t1", {}, result, None) == "ok"
    row = _rows(tmp_path, recorder)["t1"]
    assert {k: row[k] for k in prov.KEYS} == MEASURED
    assert row["metrics.val_acc"] == 0.5 and "metrics.dirty" not in row  # a bool is no metric
    tags = tracker.tags["run-t1"]
    assert {k: tags[f"syncstudy.{k}"] for k in prov.KEYS} == {**MEASURED, "dirty": "true"}
    assert tags["mlflow.source.git.commit"] == MEASURED["commit"]  # the trial's, not the driver's


def test_a_trial_that_failed_before_its_first_result_is_read_from_its_note(tmp_path: Path) -> None:
    recorder, tracker = _recorder(tmp_path)
    assert recorder.finish("t2", {}, None, None, error_text=_cpu_oom_trace()) == "oom"
    row = _rows(tmp_path, recorder)["t2"]
    assert row["status"] == "oom" and "DefaultCPUAllocator" in row["error"]
    assert row["error"].startswith("RuntimeError: ")  # the note line is not taken for the error
    assert {k: row[k] for k in prov.KEYS} == MEASURED
    assert tracker.tags["run-t2"]["syncstudy.device"] == "cuda:1 (Test Card)"


def test_a_row_without_provenance_has_null_columns_and_no_tags(tmp_path: Path) -> None:
    recorder, tracker = _recorder(tmp_path)
    recorder.finish("t3", {}, {"final": 1, "status": "ok", "val_acc": 0.1}, None)
    row = _rows(tmp_path, recorder)["t3"]
    assert all(row[k] is None for k in prov.KEYS)
    assert not {f"syncstudy.{k}" for k in prov.KEYS} & set(tracker.tags["run-t3"])


@pytest.mark.parametrize(
    ("trace", "status"),
    [
        ("Traceback...\nMemoryError: injected", "oom"),
        ("Traceback...\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB", "oom"),
        ("Traceback...\nRuntimeError: [enforce fail at alloc_cpu.cpp:127] data. "
         "DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes.", "oom"),  # Windows
        ("Traceback...\nRuntimeError: shape mismatch", "error"),
    ],
)  # fmt: skip
def test_classify_error_knows_host_out_of_memory(trace: str, status: str) -> None:
    assert classify_error(trace)[0] == status


def test_a_real_cpu_allocation_failure_is_oom() -> None:
    status, message = classify_error(_cpu_oom_trace())
    assert status == "oom" and message.startswith("RuntimeError: [enforce fail"), message


def _record(tid: str, commit: str | None) -> Any:
    row = TrialRow(trial_id=tid, status="ok", params={}, metrics={"val_acc": 0.5}, mlflow_run_id="r" + tid,
                   mlflow_start_time=1.0, commit=commit)  # fmt: skip
    return as_run(row, ["val_acc"], {})


def test_trials_of_another_or_no_commit_are_marked() -> None:
    records = [_record("a", "c1"), _record("b", "c2"), _record("c", "c2"), _record("d", None)]
    assert records[0].tags == {"syncstudy.commit": "c1"}  # as the run's tag, from the row
    assert prov.off_commit(records) == ("c2", {"a", "d"})
    assert prov.off_commit([_record("a", None)]) == (None, set())  # rows older than provenance
    assert prov.off_commit([_record("a", "c1"), _record("b", "c2")])[0] == "c1"  # a tie: the first


def test_the_commit_is_none_outside_a_checkout_and_measured_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncmodel import provenance as measure

    calls: list[list[str]] = []
    real = subprocess.run

    def counted(args: list[str], **kw: Any) -> Any:
        calls.append(args)
        return real(args, **kw)

    monkeypatch.setattr(measure.subprocess, "run", counted)
    measure.git_commit.cache_clear()
    try:
        assert measure.git_commit(tmp_path) == (None, False) and calls == []  # no .git: no git call
        broken = tmp_path / "broken"
        (broken / ".git").mkdir(parents=True)  # not a repository: git fails, no error escapes
        assert measure.git_commit(broken) == (None, False) and calls
        if (measure.ROOT / ".git").exists():
            head = real(["git", "rev-parse", "HEAD"], cwd=measure.ROOT, capture_output=True, text=True).stdout.strip()
            before = len(calls)
            first = measure.git_commit()
            assert measure.git_commit() == first and len(calls) == before + 2  # rev-parse + status, once
            assert first[0] is not None and len(first[0]) == 40
            # HEAD may move while others commit in this tree: measured just around the call
            after = real(["git", "rev-parse", "HEAD"], cwd=measure.ROOT, capture_output=True, text=True).stdout.strip()
            assert first[0] in {head, after}
    finally:
        measure.git_commit.cache_clear()
