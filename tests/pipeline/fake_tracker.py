"""A stand-in for the recorder's side of pipeline.record.tracking.Tracker, for tests that drive
`StudyRecorder` without MLflow: it keeps the tags each trial run was finished with."""

from __future__ import annotations

from typing import Any


class FakeTracker:
    """The recorder's side of pipeline.record.tracking.Tracker, keeping what it was told."""

    def __init__(self) -> None:
        self.tags: dict[str, dict[str, str]] = {}
        self.run_start: dict[str, int] = {}

    def trial_run(self, trial_id: str, parent_id: str, params: dict[str, Any]) -> str:
        self.run_start["run-" + trial_id] = 1_700_000_000_000
        return "run-" + trial_id

    def finish_trial(self, run_id: str, *, tags: dict[str, str], **_: Any) -> bool:
        self.tags[run_id] = dict(tags)
        return False  # nothing new written: no data set or images to log

    def log_epochs(self, run_id: str, records: list[dict[str, float]]) -> None:
        pass
