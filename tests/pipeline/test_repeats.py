"""No wasted trial (pipeline.repeats, pipeline.search.StudySearcher): a proposal equal to a
trained or running trial's config is not handed to Tune. The searcher is driven directly
(suggest / on_trial_complete, no Ray) with a sampler that proposes scripted points; one small
real study shows it end to end."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import optuna
import pyarrow.parquet as pq
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from pipeline import cli, repeats, search
from pipeline.spec import Objective, Param, StudySpec
from syncmodel.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]

A = {"focus_kind": "spread", "epsilon": 0.5}
B = {"focus_kind": "outside", "epsilon": 0.5}
C = {"focus_kind": "gate", "epsilon": 0.5}


class Scripted(optuna.samplers.BaseSampler):
    """Proposes `points` in order, one per new Optuna trial (the last one over and over)."""

    def __init__(self, points: list[dict[str, Any]]):
        self.points = points
        self.asks = 0
        self._of: dict[int, dict[str, Any]] = {}

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: dict) -> dict:
        return {}

    def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
        if trial.number not in self._of:
            self._of[trial.number] = self.points[min(self.asks, len(self.points) - 1)]
            self.asks += 1
        return self._of[trial.number][name]


def _space(epsilon: Param | None = None) -> dict[str, Param]:
    return {
        "focus_kind": Param("focus_kind", "categorical", choices=("spread", "outside", "gate")),
        "epsilon": epsilon or Param("epsilon", "float", 0.2, 0.8),
    }


def _searcher(points: list[dict[str, Any]], space: dict[str, Param] | None = None, name: str = "rep"):  # noqa: ANN202
    spec = StudySpec(
        name=name, train=TrainConfig(), search=space or _space(),
        objectives=[Objective("val_acc", "max"), Objective("interpretability", "max")],
    )  # fmt: skip
    sampler = Scripted(points)
    searcher = search.searcher_class()(
        space=search.distributions(spec), metric=["val_acc", "interpretability"], mode=["max", "max"],
        sampler=sampler, study_name=name,
    )  # fmt: skip
    return searcher, sampler


def _done(acc: float) -> dict[str, Any]:
    return {"final": 1, "val_acc": acc, "interpretability": 0.25}


def _states(searcher: Any) -> list[TrialState]:
    return [t.state for t in searcher._ot_study.trials]


def _mapped(searcher: Any) -> dict[str, Any]:
    """trial id → Optuna trial, as tests/pipeline/conftest.py's searcher_trials reads them."""
    by_number = {t.number: t for t in searcher._ot_study.trials}
    return {tid: by_number[t.number] for tid, t in searcher._ot_trials.items()}


def test_a_point_is_compared_after_the_spec_rounding() -> None:
    dists = {
        "x": FloatDistribution(0.2, 1.0, step=0.1),
        "k": IntDistribution(0, 4, step=2),
        "kind": CategoricalDistribution(("a", "b")),
        "lam": FloatDistribution(1e-3, 1.0, log=True),
    }
    # 0.1 * 3 + 0.2 is 0.5000000000000001: the same step of the range as 0.5
    assert repeats.point_of({"x": 0.1 * 3 + 0.2}, dists) == repeats.point_of({"x": 0.5}, dists)
    assert repeats.point_of({"x": 0.5}, dists) != repeats.point_of({"x": 0.6}, dists)
    assert repeats.point_of({"k": 2.0, "kind": "a"}, dists) == repeats.point_of({"kind": "a", "k": 2}, dists)
    assert repeats.point_of({"kind": "a"}, dists) != repeats.point_of({"kind": "b"}, dists)
    assert repeats.point_of({"lam": 0.01}, dists) != repeats.point_of({"lam": 0.0100001}, dists)
    assert repeats.space_size({k: dists[k] for k in ("x", "k", "kind")}) == 9 * 3 * 2
    assert repeats.space_size({"k": IntDistribution(1, 6, log=True)}) == 6
    assert repeats.space_size(dists) is None  # a continuous range: never used up


def test_a_repeat_of_a_finished_trial_reuses_its_result_and_asks_again() -> None:
    searcher, sampler = _searcher([A, A, B])
    assert searcher.suggest("t0") == A
    searcher.on_trial_complete("t0", _done(0.9))
    assert searcher.suggest("t1") == B  # A again was not handed to Tune
    assert sampler.asks == 3
    trials = searcher._ot_study.trials
    # the repeat is an Optuna trial told t0's values (what the sampler learns from), not a trial
    assert _states(searcher) == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING]
    assert trials[1].params == A and trials[1].values == trials[0].values == [0.9, 0.25]
    assert set(searcher._ot_trials) == {"t0", "t1"} and _mapped(searcher)["t1"].params == B
    assert searcher._repeats == repeats.Repeats(reused=1)
    searcher.on_trial_complete("t1", _done(0.8))
    # every Tune trial maps to a COMPLETE Optuna trial with its own values (resume's check)
    assert {tid: t.values for tid, t in _mapped(searcher).items()} == {"t0": [0.9, 0.25], "t1": [0.8, 0.25]}


def test_a_repeat_of_a_running_trial_waits_for_its_outcome() -> None:
    searcher, _ = _searcher([A, A, B])
    assert searcher.suggest("t0") == A
    assert searcher.suggest("t1") == B  # t0 still running: A is held, not trained twice
    held = searcher._ot_study.trials[1]
    assert held.params == A and held.state == TrialState.RUNNING
    assert searcher._repeats == repeats.Repeats(waited=1)
    searcher.on_trial_complete("t0", _done(0.7))
    assert searcher._ot_study.trials[1].state == TrialState.COMPLETE
    assert searcher._ot_study.trials[1].values == [0.7, 0.25]
    assert searcher._held == {}


def test_a_repeat_of_a_failed_trial_is_trained() -> None:
    """A trial that did not finish gives no result to reuse: its repeats waiting on it are
    FAIL (not evaluated) and a later proposal of its point is trained."""
    searcher, _ = _searcher([A, A, B, A])
    searcher.suggest("t0")
    assert searcher.suggest("t1") == B
    searcher.on_trial_complete("t0", None, error=True)
    assert _states(searcher)[:2] == [TrialState.FAIL, TrialState.FAIL]
    assert searcher.suggest("t2") == A
    assert searcher._repeats == repeats.Repeats(waited=1)


def test_a_used_up_space_trains_repeats_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    space = {"focus_kind": Param("focus_kind", "categorical", choices=("spread", "outside"))}
    kinds = [{"focus_kind": "spread"}, {"focus_kind": "outside"}, {"focus_kind": "spread"}]
    searcher, sampler = _searcher(kinds, space)
    for tid in ("t0", "t1"):
        searcher.suggest(tid)
        searcher.on_trial_complete(tid, _done(0.5))
    with caplog.at_level(logging.INFO, logger="optuna.syncstudy"):
        assert searcher.suggest("t2") == {"focus_kind": "spread"}
        assert searcher.suggest("t3") == {"focus_kind": "spread"}
    assert sampler.asks == 4  # both points trained: no point in asking again
    assert searcher._repeats == repeats.Repeats(trained=2)
    assert sum("used up" in r.getMessage() for r in caplog.records) == 1


def test_a_sampler_stuck_on_one_point_is_asked_at_most_reasks_times() -> None:
    searcher, sampler = _searcher([A])  # epsilon continuous: the space is never used up
    searcher.suggest("t0")
    searcher.on_trial_complete("t0", _done(0.5))
    assert searcher.suggest("t1") == A
    assert sampler.asks == 2 + repeats.REASKS
    assert searcher._repeats == repeats.Repeats(reused=repeats.REASKS, trained=1)
    assert set(searcher._ot_trials) == {"t0", "t1"}


def test_the_repeat_state_survives_resume(tmp_path: Path) -> None:
    """Tune pickles the searcher's __dict__ (save/restore): a held repeat is told its outcome
    after a restore, and a searcher saved before this state existed rebuilds it."""
    searcher, _ = _searcher([A, A, B, C], name="resumed")
    searcher.suggest("t0")
    searcher.suggest("t1")
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    search.forget_repeats("resumed")
    again, _ = _searcher([C], name="resumed")
    again.restore(str(path))
    assert search.repeats_of("resumed") == repeats.Repeats(waited=1)
    again.on_trial_complete("t0", _done(0.6))
    assert [t.values for t in again._ot_study.trials[:2]] == [[0.6, 0.25], [0.6, 0.25]]

    state = pickle.loads(path.read_bytes())
    for name in ("_points", "_point_of", "_held", "_repeats", "_said_used_up"):
        del state[name]
    path.write_bytes(pickle.dumps(state))
    old, _ = _searcher([], name="old")
    old.restore(str(path))
    sampler = old._ot_study.sampler  # restored with the rest: given the points to propose next
    sampler.points, sampler.asks = [B, C], 0
    old.on_trial_complete("t1", _done(0.4))  # B, finished after the restore
    assert old.suggest("t2") == C  # B again: reused, not trained
    assert old._repeats == repeats.Repeats(reused=1)


@pytest.mark.slow
def test_a_study_trains_no_config_twice_until_the_space_is_used_up(
    ray_cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], searcher_trials  # noqa: ANN001
) -> None:
    """Two configs, four trials, a random sampler whose first three proposals are one config:
    the first two trials differ, the last two are the repeats of a used-up space."""
    choices = CategoricalDistribution(("spread", "outside"))
    raw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    first = [raw.ask({"focus_kind": choices}).params["focus_kind"] for _ in range(3)]
    assert len(set(first)) == 1  # without the searcher's check, trials 0 and 1 would repeat
    doc = yaml.safe_load((ROOT / "studies" / "digits.yaml").read_text())
    storage = tmp_path / "study"
    doc["search"] = {"focus_kind": {"choices": ["spread", "outside"]}, "lr": 2.0e-3}
    doc["sampler"] = {"name": "random", "seed": 2}
    doc["smoke"].update(samples=4, concurrency=2, storage=str(storage))
    doc["smoke"]["evaluation"] = {"max_images": 50, "pictures": False}
    spec = tmp_path / "two.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert cli.main(["launch", str(spec), "--smoke", "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = sorted(pq.read_table(storage / "trials.parquet").to_pylist(), key=lambda r: r["start_time"])
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
    kinds = [r["params.focus_kind"] for r in rows]
    assert kinds[0] != kinds[1], kinds
    assert "2 repeats trained anyway" in out
    log = (storage / "launch.log").read_text()
    assert log.count("the search space is used up") == 1 and "not trained: a repeat of trial" in log
    found = search.repeats_of("digits")
    assert found.trained == 2 and found.skipped == 2  # the sampler's 2nd and 3rd proposals
    trials = searcher_trials(storage)
    assert set(trials) == {r["trial_id"] for r in rows}
    assert all(t.state == TrialState.COMPLETE and t.values for t in trials.values())
