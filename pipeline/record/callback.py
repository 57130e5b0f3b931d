"""Tune's events → the driver's `StudyRecorder`: the one Ray-facing part of pipeline.record."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ray import tune

from pipeline.hooks import hooks
from pipeline.record.recorder import StudyRecorder, error_text_of
from pipeline.record.state import DiskFull, disk_full, keep_good_state


class StudyCallback(tune.Callback):
    """Tune's events → `StudyRecorder`, in the driver's control loop, synchronously: a trial
    that Tune's snapshot holds as ended has been recorded.

    A recording failure (the tracking server went away, a full disk) is reported and never
    raised into Tune, which would end the whole study: the study goes on, and the
    reconciliation after `fit` records again whatever was missed (every write is idempotent).
    """

    # Class defaults: a callback unpickled from an older tuner.pkl (--resume) lacks them.
    started = 0
    ended = 0

    def __init__(self, recorder: StudyRecorder):
        self.rec = recorder
        self.failures = 0

    def _guard(self, what: str, trial_id: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            if disk_full(exc):  # the study stops here and resumes once there is space
                raise DiskFull(f"recording {what} of trial {trial_id}") from exc
            self.failures += 1
            if self.failures <= 5:
                print(
                    f"syncstudy: could not record {what} of trial {trial_id} "
                    f"({exc.__class__.__name__}: {str(exc)[:200]}); retrying at the end",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
            return None

    def on_trial_start(self, iteration, trials, trial, **info):  # noqa: ANN001, ANN201
        self._guard("the start", trial.trial_id, self.rec.start, trial.trial_id, trial.config)
        self.started += 1
        hooks().driver_point("before_first_result", self.started)  # a test seam (pipeline.hooks)

    def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001, ANN201
        self._guard("an epoch", trial.trial_id, self.rec.epoch, trial.trial_id, trial.config, result)

    def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001, ANN201
        status = self._guard(
            "the end", trial.trial_id, self.rec.finish,
            trial.trial_id, trial.config, trial.last_result, trial.checkpoint,
        )  # fmt: skip
        self._ended(trial.trial_id, status)

    def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001, ANN201
        text = error_text_of(trial)  # Tune's error.txt, read where it is written first
        if disk_full(text):
            # Not the trial's fault: it is not recorded as failed; Tune's snapshot on disk (or
            # the kept copy) still holds it running, and --resume continues it.
            raise DiskFull(f"trial {trial.trial_id}")
        status = self._guard(
            "the error", trial.trial_id, self.rec.finish,
            trial.trial_id, trial.config, trial.last_result, trial.checkpoint,
            error_text=str(text), node=(trial.last_result or {}).get("node_ip"),
        )  # fmt: skip
        self._ended(trial.trial_id, status)

    def _ended(self, trial_id: str, status: str | None) -> None:
        if status is not None:
            self.rec.progress(trial_id, status)
        self.ended += 1
        hooks().driver_point("after_trial", self.ended)  # a test seam (pipeline.hooks)


class StateKeeper(tune.Callback):
    """Keeps a copy of Tune's experiment state whenever it changed and is whole
    (pipeline.record.state), in the driver's control loop: at most once a second, and no
    more often than keeps its share of the loop's time under about 5% (Tune's own rule for
    its snapshots): the state grows with the study, and so does the cost of a copy."""

    PERIOD_S = 1.0
    SHARE = 0.05
    _last = 0.0  # class defaults: set per instance once it runs
    _period = 0.0  # the last copy's time / SHARE (PERIOD_S is the floor)

    def __init__(self, storage: str):
        self.storage = storage
        self._seen: dict[str, tuple[int, int]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"storage": self.storage, "_seen": {}}

    def _keep(self) -> None:
        try:
            keep_good_state(Path(self.storage), self._seen)
        except Exception:  # noqa: BLE001 - a copy is a safety net; never end the study for it
            pass

    def on_step_end(self, iteration, trials, **info):  # noqa: ANN001, ANN201
        now = time.monotonic()
        if now - self._last >= max(self.PERIOD_S, self._period):
            self._keep()
            self._last = time.monotonic()
            self._period = (self._last - now) / self.SHARE

    def on_experiment_end(self, trials, **info):  # noqa: ANN001, ANN201
        self._keep()
