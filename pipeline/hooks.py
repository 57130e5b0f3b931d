"""A seam for tests: points in a trial and in the driver where a test may act (make a trial
fail, stop the driver). The product's hooks do nothing.

`SYNCSTUDY_HOOKS=PATH` names a Python file whose `HOOKS` (a `Hooks`) replaces the no-op
ones in every process that inherits the variable (the driver, the local Ray's workers);
tests/pipeline/faults.py is the one such file (docs/reliability.md).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

HOOKS_ENV = "SYNCSTUDY_HOOKS"


class TrialHooks:
    """One trial's hook points (built in the trainable before training)."""

    def data(self, bundle: Any) -> Any:
        """The data set the trial trains on."""
        return bundle

    def before_training(self) -> None:
        pass

    def after_epoch(self, epoch: int) -> None:
        pass


class Hooks:
    def trial(self, trial_name: str, trial_id: str, resume: Path | None) -> TrialHooks:
        return TrialHooks()

    def driver_point(self, point: str, count: int = 0) -> None:
        """`ray_started` (a local ray.init returned), `before_first_result` (count: trials
        started) or `after_trial` (trials recorded)."""


_ACTIVE: Hooks | None = None


def hooks() -> Hooks:
    """This process's hooks: the no-op ones unless `SYNCSTUDY_HOOKS` names a file."""
    global _ACTIVE
    if _ACTIVE is None:
        path = os.environ.get(HOOKS_ENV)
        _ACTIVE = _load(Path(path)) if path else Hooks()
    return _ACTIVE


def _load(path: Path) -> Hooks:
    spec = importlib.util.spec_from_file_location("syncstudy_hooks", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{HOOKS_ENV}={path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # registered first: its dataclasses look their module up
    spec.loader.exec_module(module)
    return module.HOOKS
