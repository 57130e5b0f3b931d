"""pipeline.live_fifo: the same trial as Ray's FIFO, chosen without walking every trial."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers.trial_scheduler import FIFOScheduler

from pipeline.live_fifo import LiveASHA, LiveFIFO
from pipeline.mo_asha import MOASHA

LIVE = (Trial.PENDING, Trial.RUNNING, Trial.PAUSED)


@dataclass(eq=False)
class FakeTrial:
    trial_id: str
    status: str = Trial.PENDING


class FakeController:
    """What a scheduler sees of Tune's controller: every trial, and the live ones (a set,
    as Tune keeps them). Counts the walks over every trial."""

    def __init__(self) -> None:
        self.trials: list[FakeTrial] = []
        self.walks = 0

    def get_trials(self) -> list[FakeTrial]:
        self.walks += 1
        return self.trials

    def get_live_trials(self) -> set[FakeTrial]:
        return {t for t in self.trials if t.status in LIVE}


def _schedulers() -> list:
    return [LiveFIFO(), LiveASHA(time_attr="epoch", metric="val_acc", mode="max", max_t=4),
            MOASHA(objectives=[("val_acc", "max")], time_attr="epoch", max_t=4)]  # fmt: skip


@pytest.mark.parametrize("which", range(3))
def test_the_same_choice_as_fifo_without_the_walk(which: int) -> None:
    live_fifo, rng = _schedulers()[which], random.Random(which)
    controller, reference = FakeController(), FIFOScheduler()
    for i in range(300):
        trial = FakeTrial(f"t{i:03d}")
        controller.trials.append(trial)
        live_fifo.on_trial_add(controller, trial)
        for t in controller.get_live_trials():  # Tune's loop runs, stops and pauses some
            move = rng.random()
            if move < 0.3 and t.status == Trial.PENDING:
                t.status = Trial.RUNNING
            elif move < 0.4 and t.status == Trial.RUNNING:
                t.status = Trial.PAUSED
            elif move < 0.6 and t.status != Trial.PENDING:
                t.status = rng.choice([Trial.TERMINATED, Trial.ERROR])
                if t.status == Trial.TERMINATED:
                    live_fifo.on_trial_complete(controller, t, {"epoch": 4, "val_acc": 0.5})
                else:
                    live_fifo.on_trial_error(controller, t)
            elif move < 0.7 and t.status == Trial.PAUSED:
                t.status = Trial.PENDING  # unpaused: pending again, in its first place
        walks = controller.walks
        chosen = live_fifo.choose_trial_to_run(controller)
        assert controller.walks == walks  # no walk over every trial
        assert chosen is reference.choose_trial_to_run(controller)
    assert any(t.status == Trial.TERMINATED for t in controller.trials)
    assert len(live_fifo._added) <= len(controller.get_live_trials())  # ended trials forgotten


def test_a_trial_it_was_not_told_of_falls_back_to_fifo() -> None:
    scheduler, controller = LiveFIFO(), FakeController()
    controller.trials = [FakeTrial("old"), FakeTrial("new")]
    scheduler.on_trial_add(controller, controller.trials[1])
    assert scheduler.choose_trial_to_run(controller) is controller.trials[0]
    assert controller.walks >= 1
