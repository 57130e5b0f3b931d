"""First-in, first-out trial choice in time independent of the study's size.

Ray Tune's `FIFOScheduler.choose_trial_to_run` walks every trial the study has ever had to
find the first pending one, and Tune asks it on every step of its loop: in a study of 5,000
one-epoch trials that walk was the second-largest part of the driver's growth per trial
(docs/benchmarks.md, "Bookkeeping flat to 5,000 trials"; issue 28, item 4). The same choice
is made here among the *live* trials only (pending, running, paused: at most a few more
than the trials running at once), in the order Tune added them, which `on_trial_add` notes.
ASHA and MO-ASHA inherit the choice from `FIFOScheduler`, so they take it from here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import ASHAScheduler
from ray.tune.schedulers.trial_scheduler import FIFOScheduler

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


class LiveOrder:
    """Mixin for a `FIFOScheduler` subclass: the same choice as FIFO's (the first pending
    trial in the order trials were added, else the first paused one), made among live trials.

    A trial Tune never announced through `on_trial_add` (none in Ray 2.60: new and restored
    trials both go through it) sends the choice back to FIFO's walk over every trial.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._added: dict[str, int] = {}  # live trial id → the order Tune added it in
        self._count = 0

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        if trial.trial_id not in self._added:
            self._added[trial.trial_id] = self._count
            self._count += 1
        super().on_trial_add(tune_controller, trial)

    def _ended(self, trial: Trial) -> None:
        self._added.pop(trial.trial_id, None)

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict | None) -> None:
        self._ended(trial)
        super().on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        self._ended(trial)
        super().on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._ended(trial)
        super().on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        from ray.tune.experiment import Trial

        live = list(tune_controller.get_live_trials())
        if any(t.trial_id not in self._added for t in live):
            return super().choose_trial_to_run(tune_controller)  # FIFO's own walk
        for status in (Trial.PENDING, Trial.PAUSED):
            ready = [t for t in live if t.status == status]
            if ready:
                return min(ready, key=lambda t: self._added[t.trial_id])
        return None


class LiveFIFO(LiveOrder, FIFOScheduler):
    """Tune's default scheduler (run every trial to its end, first in first out)."""


class LiveASHA(LiveOrder, ASHAScheduler):
    """Ray's ASHA, its trial choice made among live trials."""
