"""MO-ASHA (pipeline.mo_asha): the Pareto helpers on hand-made points, the scheduler's decisions
driven by hand with stand-in trials (as Ray's own scheduler tests do), its saved state, the spec
section's errors, and one small Ray Tune run."""

from __future__ import annotations

import math
import pickle
import random
from dataclasses import dataclass

import pytest
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from pipeline.mo_asha import (
    MOASHA,
    MOASHASpec,
    crowded_ranking,
    crowding_distance,
    non_dominated_sort,
    parse_mo_asha,
    promoted,
    ranked_ahead,
    rung_milestones,
)
from syncmodel.errors import ConfigError

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


@dataclass(frozen=True)
class FakeTrial:
    """What a scheduler reads of a Tune `Trial`."""

    trial_id: str


def two_max(**kw: float) -> MOASHA:
    """Objectives a and b, both maximised; rungs at epochs 1, 2, 4 (max_t 8, η 2)."""
    return MOASHA([("a", "max"), ("b", "max")], time_attr="epoch", max_t=8, grace_period=1,
                  reduction_factor=2, **kw)  # fmt: skip


def report(s: MOASHA, trial_id: str, epoch: float, **metrics: float) -> str:
    return s.on_trial_result(None, FakeTrial(trial_id), {"epoch": epoch, **metrics})


# --------------------------------------------------------------------------- pure helpers


def test_non_dominated_sort_ranks_hand_made_points() -> None:
    points = [(3, 1), (1, 3), (2, 2), (1, 1), (0, 0), (2, 2)]
    # (1, 1) is dominated only by front-0 points; (0, 0) also by (1, 1); equal points share a rank.
    assert non_dominated_sort(points) == [0, 0, 0, 1, 2, 0]


def test_crowding_distance_hand_computed() -> None:
    # Ranges 4 and 4. (1, 3.5): (3-0)/4 + (4-1)/4 = 1.5; (3, 1): (4-1)/4 + (3.5-0)/4 = 1.625.
    assert crowding_distance([(0, 4), (1, 3.5), (3, 1), (4, 0)]) == [math.inf, 1.5, 1.625, math.inf]


def test_crowding_distance_shared_by_duplicates_whatever_the_order() -> None:
    front = [(0, 4), (1, 3.5), (1, 3.5), (3, 1), (4, 0)]
    expected = [math.inf, 1.5, 1.5, 1.625, math.inf]
    assert crowding_distance(front) == expected
    assert crowding_distance(front[::-1]) == expected[::-1]


def test_crowding_distance_of_two_distinct_points_is_infinite() -> None:
    assert crowding_distance([(0, 1), (1, 0), (1, 0)]) == [math.inf] * 3


def test_non_finite_point_ranks_behind_every_finite_one() -> None:
    ranking = crowded_ranking([(1, 1), (0, 0), (math.nan, 5)])
    assert ranking == [(0, math.inf), (1, math.inf), (2, 0.0)]


def test_ranked_ahead_counts_better_fronts_and_larger_crowding() -> None:
    points = [(0, 10), (10, 0), (1, 9), (2, 8), (9, 1), (1.5, 8.5), (0, 0)]
    # (1.5, 8.5) is in front 0 with distance 0.2, the least of the front: all 5 others are ahead.
    assert ranked_ahead(points, 5) == 5
    assert ranked_ahead(points, 6) == 6  # the only point of front 1


def test_promoted_allows_m_minus_one_over_eta_ahead() -> None:
    assert promoted([(0.0,)], 0, 2)  # alone at the rung
    # 5 others, η = 2: at most 2 ahead continue, 3 ahead stop.
    points = [(5.0,), (4.0,), (3.0,), (2.0,), (1.0,), (0.0,)]
    assert [promoted(points, i, 2) for i in range(6)] == [True, True, True, False, False, False]


def test_rung_milestones_below_max_t() -> None:
    assert rung_milestones(1, 2, 8) == (1, 2, 4)
    assert rung_milestones(2, 3, 30) == (2, 6, 18)


# --------------------------------------------------------------------------- decisions


def test_dominated_trials_stop_and_the_front_survives() -> None:
    s = two_max()
    assert report(s, "P", 1, a=0.9, b=0.5) == CONTINUE  # alone at the rung
    assert report(s, "Q", 1, a=0.5, b=0.9) == CONTINUE  # non-dominated beside P
    for i, (a, b) in enumerate([(0.4, 0.4), (0.5, 0.5), (0.2, 0.1)]):
        assert report(s, f"D{i}", 1, a=a, b=b) == STOP  # dominated by both P and Q
    assert report(s, "P", 2, a=0.95, b=0.6) == CONTINUE  # alone at rung 2
    assert report(s, "Q", 2, a=0.6, b=0.95) == CONTINUE


def test_a_late_non_dominated_trial_continues() -> None:
    s = two_max()
    for i, (a, b) in enumerate([(0.4, 0.4), (0.3, 0.5), (0.5, 0.2)]):
        report(s, f"D{i}", 1, a=a, b=b)
    assert report(s, "F", 1, a=0.9, b=0.9) == CONTINUE  # fourth to arrive, dominates all three


def test_crowding_breaks_ties_within_the_front() -> None:
    base = [(0, 10), (10, 0), (1, 9), (2, 8), (9, 1)]  # one front
    decisions = {}
    for name, (a, b) in {"isolated": (5, 5), "crowded": (1.5, 8.5)}.items():
        s = two_max()
        for i, (x, y) in enumerate(base):
            report(s, f"T{i}", 1, a=x, b=y)
        decisions[name] = report(s, name, 1, a=a, b=b)
    # Both are non-dominated; m = 5 others allow 2 ahead: the isolated one has the two
    # boundary points ahead, the crowded one (distance 0.2) all five.
    assert decisions == {"isolated": CONTINUE, "crowded": STOP}


def test_min_objectives_are_negated() -> None:
    s = MOASHA([("acc", "max"), ("loss", "min")], time_attr="epoch", max_t=8, reduction_factor=2)
    report(s, "P", 1, acc=0.9, loss=0.1)
    report(s, "Q", 1, acc=0.5, loss=0.05)
    assert report(s, "D", 1, acc=0.5, loss=0.5) == STOP  # higher loss than both: dominated


@pytest.mark.parametrize("eta", [2, 3, 4])
def test_single_objective_makes_ashas_decision(eta: int) -> None:
    """Where Ray's quantile falls on a recorded value ((m-1)/η integer) both decide alike;
    where it interpolates MO-ASHA is the stricter (never continues a trial ASHA stops)."""
    rng = random.Random(eta)
    asha = AsyncHyperBandScheduler(time_attr="epoch", metric="v", mode="max", max_t=64,
                                   grace_period=1, reduction_factor=eta)  # fmt: skip
    mo = MOASHA([("v", "max")], time_attr="epoch", max_t=64, grace_period=1, reduction_factor=eta)
    exact = 0
    for m in range(40):  # the m-th arrival at rung 1 has m others recorded
        trial, result = FakeTrial(f"t{m}"), {"epoch": 1, "v": float(rng.randint(0, 30))}
        asha.on_trial_add(None, trial)
        expected, got = asha.on_trial_result(None, trial, result), mo.on_trial_result(None, trial, result)
        if m == 0 or (m - 1) % eta == 0:
            assert got == expected, (m, result)
            exact += 1
        else:
            assert not (expected == STOP and got == CONTINUE), (m, result)
    assert exact >= 40 // eta


def test_result_without_an_objective_is_ignored_at_the_rung() -> None:
    s = two_max()
    report(s, "P", 1, a=0.9, b=0.9)
    assert report(s, "D", 1, a=0.1) == CONTINUE  # no b: nothing compared, nothing recorded
    assert s.get_state()["rungs"][0] == {"P": (0.9, 0.9)}


def test_result_at_max_t_stops() -> None:
    assert report(two_max(), "P", 8, a=1.0, b=1.0) == STOP


def test_a_trial_is_decided_once_per_rung() -> None:
    s = two_max()
    report(s, "P", 1, a=0.9, b=0.9)
    report(s, "D", 1, a=0.1, b=0.1)
    # D continuing after a stop decision (e.g. a retry from a checkpoint) is not re-judged.
    assert report(s, "D", 1, a=0.1, b=0.1) == CONTINUE


def test_complete_records_the_last_result_and_error_keeps_records() -> None:
    s = two_max()
    report(s, "P", 1, a=0.5, b=0.5)
    s.on_trial_complete(None, FakeTrial("P"), {"epoch": 2, "a": 0.6, "b": 0.6})
    s.on_trial_complete(None, FakeTrial("E"), {})  # a trial that never reported: ignored
    s.on_trial_error(None, FakeTrial("P"))
    s.on_trial_remove(None, FakeTrial("P"))
    rungs = s.get_state()["rungs"]
    assert rungs[:2] == [{"P": (0.5, 0.5)}, {"P": (0.6, 0.6)}]
    assert report(s, "D", 2, a=0.1, b=0.1) == STOP  # judged against the completed P


def test_search_properties_from_tune_config_conflict() -> None:
    s = two_max()
    assert s.set_search_properties(None, None) is True
    assert s.set_search_properties("a", "max") is False
    assert s.metric is None  # Tune's strict metric check must not demand one metric


# --------------------------------------------------------------------------- saved state


def _trained() -> MOASHA:
    s = two_max()
    report(s, "P", 1, a=0.9, b=0.5)
    report(s, "Q", 1, a=0.5, b=0.9)
    return s


def test_save_restore_round_trip(tmp_path) -> None:
    path = tmp_path / "sched.pkl"
    _trained().save(str(path))
    fresh = two_max()
    fresh.restore(str(path))
    assert report(fresh, "D", 1, a=0.4, b=0.4) == STOP  # a fresh, empty rung would continue it
    assert report(two_max(), "D", 1, a=0.4, b=0.4) == CONTINUE


def test_state_callback_restores_the_scheduler_it_was_pickled_with() -> None:
    """What Tuner.restore does: scheduler and callback come back from one pickle (tuner.pkl),
    then Tune sets the callback's checkpointed state."""
    s = _trained()
    state = s.state_callback().get_state()
    fresh = two_max()
    scheduler, callback = pickle.loads(pickle.dumps((fresh, fresh.state_callback())))
    callback.set_state(state)
    assert report(scheduler, "D", 1, a=0.4, b=0.4) == STOP


def test_state_of_other_objectives_is_refused() -> None:
    other = MOASHA([("a", "max")], time_attr="epoch", max_t=8, reduction_factor=2)
    with pytest.raises(ValueError, match="objectives"):
        other.set_state(_trained().get_state())


# --------------------------------------------------------------------------- spec section


@dataclass(frozen=True)
class Obj:
    metric: str
    mode: str


STUDY = [Obj("test_acc", "max"), Obj("interpretability", "max")]


def test_spec_defaults_and_modes() -> None:
    spec = parse_mo_asha(
        {"name": "mo_asha", "objectives": ["val_acc", {"metric": "spread"}, {"metric": "train_loss", "mode": "max"}]},
        STUDY, epochs=10,
    )  # fmt: skip
    assert spec == MOASHASpec(1, 2.0, (("val_acc", "max"), ("spread", "min"), ("train_loss", "max")))


def test_spec_objectives_default_to_per_epoch_study_objectives() -> None:
    spec = parse_mo_asha({"grace_period": 2, "reduction_factor": 3}, [Obj("val_acc", "max"), Obj("spread", "max")], 10)
    assert spec == MOASHASpec(2, 3.0, (("val_acc", "max"), ("spread", "max")))
    assert spec.scheduler(max_t=10).milestones == (2, 6)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"metric": "val_acc"}, "scheduler.metric"),
        ({"grace_period": 0}, "scheduler.grace_period"),
        ({"grace_period": 10}, "scheduler.grace_period"),
        ({"grace_period": 1.5}, "scheduler.grace_period"),
        ({"reduction_factor": 1}, "scheduler.reduction_factor"),
        ({"reduction_factor": True}, "scheduler.reduction_factor"),
        ({}, "scheduler.objectives"),  # the study's objectives are known only at the end
        ({"objectives": []}, "scheduler.objectives"),
        ({"objectives": ["test_acc"]}, "scheduler.objectives[0]"),
        ({"objectives": ["val_acc", {"metric": "nope"}]}, "scheduler.objectives[1].metric"),
        ({"objectives": ["val_acc", "val_acc"]}, "scheduler.objectives[1]"),
        ({"objectives": [{"metric": "val_acc", "mode": "up"}]}, "scheduler.objectives[0].mode"),
        ({"objectives": [{"mode": "max"}]}, "scheduler.objectives[0].metric"),
        ({"objectives": [{"metric": "val_acc", "sign": 1}]}, "scheduler.objectives[0].sign"),
    ],
)
def test_spec_errors_name_the_field(raw: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_mo_asha({"name": "mo_asha", **raw}, STUDY, epochs=10)
    assert err.value.field == field


# --------------------------------------------------------------------------- with Ray Tune

# Final values (a, b) of eight trials; each trial reports value * epoch / 8 at every epoch, so
# the order at every rung is the final order. The first two form the Pareto front and hold the
# extreme value of each objective, so their crowding distance is infinite at every rung and
# no arrival order can stop them; the other six are dominated by both.
FINALS = [(1.0, 0.6), (0.6, 1.0), (0.5, 0.5), (0.1, 0.2), (0.3, 0.1), (0.2, 0.4), (0.4, 0.3), (0.05, 0.05)]


@pytest.mark.slow
def test_tune_run_stops_dominated_trials_and_keeps_the_front(ray_cluster, tmp_path) -> None:
    from ray import tune

    def trainable(config: dict) -> None:  # nested: pickled by value (workers lack tests/)
        from ray import tune

        a, b = config["point"]
        for epoch in range(1, 9):
            tune.report({"epoch": epoch, "a": a * epoch / 8, "b": b * epoch / 8})

    scheduler = MOASHA([("a", "max"), ("b", "max")], time_attr="epoch", max_t=8, grace_period=1,
                       reduction_factor=2)  # fmt: skip
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"point": tune.grid_search(FINALS)},
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="mo", verbose=0,
                                  callbacks=[scheduler.state_callback()]),
    )  # fmt: skip
    grid = tuner.fit()
    epochs = {tuple(r.config["point"]): r.metrics["epoch"] for r in grid}
    assert len(epochs) == 8 and not grid.errors
    assert epochs[FINALS[0]] == 8 and epochs[FINALS[1]] == 8
    assert any(e < 8 for e in epochs.values())
    full = [p for p, e in epochs.items() if e == 8]
    front = [p for p, rank in zip(full, non_dominated_sort(full)) if rank == 0]
    assert sorted(front) == sorted(FINALS[:2])


@pytest.mark.slow
def test_tuner_restore_brings_the_rungs_back(ray_cluster, tmp_path) -> None:
    """Run 1 fails every trial still running at epoch 3; `Tuner.restore` resumes them from their
    epoch-2 checkpoints, so none reports rung 1 again: rung 1 holds all eight trials at the end
    only if the state callback carried run 1's records across the restore."""
    import glob
    import os
    import tempfile

    from ray import tune

    marker = tmp_path / "fail"
    marker.touch()

    def trainable(config: dict) -> None:  # nested: pickled by value (workers lack tests/)
        from ray import tune

        a, b = config["point"]
        start = 1
        if (ckpt := tune.get_checkpoint()) is not None:
            with ckpt.as_directory() as d:
                start = int(open(os.path.join(d, "epoch")).read()) + 1
        for epoch in range(start, 9):
            if epoch == 3 and os.path.exists(marker):
                raise RuntimeError("injected failure")
            with tempfile.TemporaryDirectory() as d:
                open(os.path.join(d, "epoch"), "w").write(str(epoch))
                metrics = {"epoch": epoch, "a": a * epoch / 8, "b": b * epoch / 8}
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    fn = tune.with_resources(trainable, {"cpu": 1})
    scheduler = MOASHA([("a", "max"), ("b", "max")], time_attr="epoch", max_t=8, grace_period=1,
                       reduction_factor=2)  # fmt: skip
    tune.Tuner(
        fn,
        param_space={"point": tune.grid_search(FINALS)},
        tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="mo", verbose=0,
                                  callbacks=[scheduler.state_callback()]),
    ).fit()  # fmt: skip
    marker.unlink()
    grid = tune.Tuner.restore(str(tmp_path / "mo"), trainable=fn, resume_errored=True).fit()
    assert not grid.errors
    assert {r.metrics["epoch"] for r in grid if tuple(r.config["point"]) in FINALS[:2]} == {8}

    # The newest session's file, picked by name as Tune does (ray.tune.utils.util).
    newest = max(glob.glob(str(tmp_path / "mo" / "callback-states-*.pkl")))
    with open(newest, "rb") as f:
        states = [s for s in pickle.load(f).values() if s and "rungs" in s]
    assert len(states) == 1 and len(states[0]["rungs"][0]) == 8
