"""Tune's events → the driver's `StudyRecorder`: the one Ray-facing part of pipeline.record."""

from __future__ import annotations

import sys
from typing import Any

from ray import tune

from pipeline.hooks import hooks
from pipeline.record.recorder import StudyRecorder


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
        text = trial.get_error() or "the trial failed without an error message"
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
