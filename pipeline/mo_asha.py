"""MO-ASHA: asynchronous successive halving on several objectives, as a Ray Tune scheduler.

ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020; Ray's
`AsyncHyperBandScheduler`) stops a trial at a rung when its one metric falls below the
(1 - 1/η) quantile of the trials recorded at that rung. With two objectives (accuracy and an
interpretability signal) one metric's quantile cuts the interpretable end of the front, so a
study had to run every trial to the end. MO-ASHA (Schmucker, Donini, Zafar, Salinas and
Archambeau, "Multi-objective Asynchronous Successive Halving", arXiv:2106.12639, 2021) keeps
successive halving and replaces the quantile by a multi-objective ranking: non-dominated sorting
with a tie-break inside a front. The tie-break here is NSGA-II's crowding distance (Deb, Pratap,
Agarwal and Meyarivan, "A Fast and Elitist Multiobjective Genetic Algorithm: NSGA-II", IEEE TEC
6(2), 2002, §III-A fast non-dominated sort, §III-B crowding distance), one of the two
tie-breaks the MO-ASHA paper studies (the other is an ε-net).

Promotion rule (what `MOASHA.on_trial_result` decides)
------------------------------------------------------
Rungs sit at `grace_period * reduction_factor**k` units of `time_attr` (epochs in this
project), for every k with a milestone below `max_t` (a trial at `max_t` is done anyway).
When a trial's result first reaches a rung, its objective vector is recorded there and:

* the trials recorded at the rung so far (this one included) are ranked by NSGA-II's crowded
  comparison: Pareto rank first (front 0 = non-dominated), then larger crowding distance;
* with `m` other trials recorded at the rung and `a` of them ranked strictly ahead of this one,
  the trial continues iff `m == 0` or `a <= (m - 1) / η`, and is stopped otherwise.

The bound is Ray ASHA's stopping rule written on ranks: ASHA continues a trial iff its value
is >= the (1 - 1/η) quantile of the `m` others, which is "at most (m - 1)/η of them strictly
better" whenever the quantile falls on a recorded value ((m - 1)/η an integer). With one
objective MO-ASHA therefore makes ASHA's decision in those cases; where numpy interpolates
between two recorded values, MO-ASHA takes the stricter side (it stops the trial that sits
between them). For η = 2 the bound equals "in the top floor(n/η) of the n recorded", the
selection of the promotion-based ASHA (Li et al., Algorithm 2) that the MO-ASHA paper builds
on; for other η it is the stopping form, which never stops the first trial at a rung. As in Ray's ASHA the decision is asynchronous (made with the
trials seen so far at that rung) and a trial not promoted is stopped, not paused. A trial
already recorded at the highest rung it has reached continues.

Details the sources leave open, decided here:
* A result missing `time_attr` or any objective metric is ignored (the trial continues, nothing
  is recorded), so per-epoch reports without the interpretability estimate are harmless.
* A non-finite objective value (NaN from a diverged run, ±inf) ranks the trial behind every
  trial with finite values (one last front, crowding distance 0).
* Crowding distance with tied coordinates: Deb's formula on the distinct points of the front,
  every point holding the front's minimum or maximum of an objective counting as a boundary
  (infinite distance), duplicates sharing their value's distance — so the ranking does not
  depend on the order in which trials arrived. Without ties it is Deb's formula exactly.

Saved state and `Tuner.restore`
-------------------------------
Ray 2.60's `Tuner.restore` does not call `TrialScheduler.save`/`restore`: the scheduler comes
back from `tuner.pkl` as it was when the `Tuner` was built (empty rungs; see
`ray/tune/impl/tuner_internal.py` and `TuneController.resume`, which restores only the searcher
and the callbacks). So `MOASHA.state_callback()` returns a Tune `Callback` whose
`get_state`/`set_state` carry the rungs: Tune checkpoints it with the experiment state and, on
restore, sets it on the scheduler that came back from the same `tuner.pkl` (the callback holds a
reference to that scheduler; one pickle keeps the two the same object). Pass it in
`RunConfig(callbacks=[..., scheduler.state_callback()])`. `save`/`restore` (a file path) are
implemented as well, as the `TrialScheduler` API has them.

The spec section (`scheduler: {name: mo_asha, ...}`) is checked by `parse_mo_asha`
(pipeline.spec.mo_asha, re-exported here).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ray.tune.callback import Callback
from ray.tune.schedulers.trial_scheduler import FIFOScheduler, TrialScheduler

from pipeline.live_fifo import LiveOrder

# The spec section lives apart (no Ray import when a spec is validated); re-exported here.
from pipeline.spec.mo_asha import MODES, SPEC_KEYS, MOASHASpec, parse_mo_asha  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    from ray.tune.experiment import Trial

STATE_VERSION = 1

# --------------------------------------------------------------------------- pure helpers
# Points are sequences of floats, every coordinate to be MAXIMISED (callers negate "min"
# objectives first).


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Pareto dominance for maximisation: `a` is >= `b` everywhere and > somewhere."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def non_dominated_sort(points: Sequence[Sequence[float]]) -> list[int]:
    """The Pareto rank of each point: 0 for the non-dominated front, 1 for the front left
    when front 0 is removed, and so on.

    Deb et al. 2002 §III-A (fast non-dominated sort), O(M N²) for N points of M objectives,
    all maximised. Equal points share a rank. `points`: N sequences of equal length M, finite.
    """
    n = len(points)
    dominated_by: list[list[int]] = [[] for _ in range(n)]  # S_p: the points p dominates
    count = [0] * n  # n_p: how many points dominate p
    for p in range(n):
        for q in range(p + 1, n):
            if dominates(points[p], points[q]):
                dominated_by[p].append(q)
                count[q] += 1
            elif dominates(points[q], points[p]):
                dominated_by[q].append(p)
                count[p] += 1
    rank = [0] * n
    front = [p for p in range(n) if count[p] == 0]
    level = 0
    while front:
        following = []
        for p in front:
            rank[p] = level
            for q in dominated_by[p]:
                count[q] -= 1
                if count[q] == 0:
                    following.append(q)
        front = following
        level += 1
    return rank


def crowding_distance(front: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point of one front (Deb et al. 2002 §III-B).

    Per objective, the points with the front's smallest and largest value get an infinite
    distance; every other point adds (next value - previous value) / (max - min), the
    neighbours taken among the distinct values. Points are deduplicated first and duplicates
    share their value's distance (so the result does not depend on the points' order); on a
    front without ties this is Deb's formula. A front of one or two distinct points is all
    boundary (infinite). `front`: N sequences of length M, finite.
    """
    if not front:
        return []
    distinct = sorted(set(map(tuple, front)))
    distance = dict.fromkeys(distinct, 0.0)
    for m in range(len(distinct[0])):
        values = sorted({p[m] for p in distinct})
        low, high = values[0], values[-1]
        position = {v: i for i, v in enumerate(values)}
        for p in distinct:
            i = position[p[m]]
            if p[m] == low or p[m] == high:
                distance[p] = math.inf
            else:
                distance[p] += (values[i + 1] - values[i - 1]) / (high - low)
    return [distance[tuple(p)] for p in front]


def crowded_ranking(points: Sequence[Sequence[float]]) -> list[tuple[int, float]]:
    """(Pareto rank, crowding distance) of each point; a point with a non-finite coordinate
    ranks behind every finite one (rank = the last finite rank + 1, distance 0)."""
    finite = [i for i, p in enumerate(points) if all(math.isfinite(x) for x in p)]
    ranks = non_dominated_sort([points[i] for i in finite])
    out: list[tuple[int, float]] = [(max(ranks, default=-1) + 1, 0.0)] * len(points)
    for level in set(ranks):
        members = [finite[j] for j, r in enumerate(ranks) if r == level]
        for i, d in zip(members, crowding_distance([points[i] for i in members])):
            out[i] = (level, d)
    return out


def ranked_ahead(points: Sequence[Sequence[float]], index: int) -> int:
    """How many points are strictly ahead of `points[index]` in NSGA-II's crowded comparison:
    a better (lower) Pareto rank, or the same rank and a larger crowding distance."""
    ranking = crowded_ranking(points)
    rank, crowd = ranking[index]
    return sum(1 for r, d in ranking if r < rank or (r == rank and d > crowd))


def promoted(points: Sequence[Sequence[float]], index: int, reduction_factor: float) -> bool:
    """MO-ASHA's decision for `points[index]` among the points recorded at its rung (itself
    included): continue iff it is alone, or at most (m - 1)/η of the m others are ranked
    strictly ahead of it (η = `reduction_factor`; the module docstring derives the bound)."""
    others = len(points) - 1
    if others == 0:
        return True
    return ranked_ahead(points, index) * reduction_factor <= others - 1


# --------------------------------------------------------------------------- the scheduler


def rung_milestones(grace_period: float, reduction_factor: float, max_t: float) -> tuple[float, ...]:
    """grace_period * reduction_factor**k for k = 0, 1, ... while below max_t."""
    out = []
    k = 0
    while grace_period * reduction_factor**k < max_t:
        out.append(grace_period * reduction_factor**k)
        k += 1
    return tuple(out)


class MOASHA(LiveOrder, FIFOScheduler):
    """Multi-objective ASHA (module docstring: the rule and its sources).

    Args:
        objectives: (metric, mode) pairs, mode "max" or "min": the per-epoch signals compared
            at each rung (e.g. [("val_acc", "max"), ("<interpretability estimate>", "max")]).
        time_attr: the result key that measures progress (this project: "epoch").
        max_t: the trials' full length in `time_attr` units; a result at or past it stops the
            trial (as Ray's ASHA with stop_last_trials=True).
        grace_period: the first rung; no trial is stopped before it.
        reduction_factor: η > 1: about 1/η of the trials reaching a rung continue.
    """

    def __init__(
        self,
        objectives: Sequence[tuple[str, str]],
        time_attr: str = "training_iteration",
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
    ):
        objectives = tuple((str(metric), str(mode)) for metric, mode in objectives)
        # Programming errors (a spec's errors are ConfigErrors, raised by parse_mo_asha).
        if not objectives:
            raise ValueError("MOASHA needs at least one (metric, mode) objective")
        if len({m for m, _ in objectives}) != len(objectives):
            raise ValueError(f"MOASHA objectives name a metric twice: {objectives}")
        for metric, mode in objectives:
            if mode not in MODES:
                raise ValueError(f"MOASHA objective {metric}: mode must be max or min, got {mode!r}")
        if not (grace_period > 0 and max_t >= grace_period and reduction_factor > 1):
            raise ValueError(
                "MOASHA needs 0 < grace_period <= max_t and reduction_factor > 1, got "
                f"grace_period={grace_period}, max_t={max_t}, reduction_factor={reduction_factor}"
            )
        super().__init__()
        self._objectives = objectives
        self._signs = tuple(1.0 if mode == "max" else -1.0 for _, mode in objectives)
        self._time_attr = time_attr
        self._max_t = max_t
        self._reduction_factor = float(reduction_factor)
        self._milestones = rung_milestones(grace_period, self._reduction_factor, max_t)
        # One dict per rung, ascending milestones: trial_id -> objective vector (maximised).
        self._rungs: list[dict[str, tuple[float, ...]]] = [{} for _ in self._milestones]
        self._num_stopped = 0  # trials stopped at a rung (not counting those that reached max_t)

    # Tune's strict metric check raises when a result lacks the scheduler's `metric`; MO-ASHA
    # ignores such results instead, so it exposes no single metric (TrialScheduler._metric None).

    @property
    def objectives(self) -> tuple[tuple[str, str], ...]:
        return self._objectives

    @property
    def milestones(self) -> tuple[float, ...]:
        return self._milestones

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """The objectives are fixed at construction; a TuneConfig metric/mode conflicts."""
        return metric is None and mode is None

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if self._time_attr not in result:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t:
            return TrialScheduler.STOP
        values = self._values(result)
        if values is None:
            return TrialScheduler.CONTINUE
        if self._record(trial.trial_id, result[self._time_attr], values, decide=True):
            return TrialScheduler.CONTINUE
        self._num_stopped += 1
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict | None) -> None:
        # As Ray's ASHA: a trial's last result still counts at the rung it reached.
        if result and self._time_attr in result:
            values = self._values(result)
            if values is not None:
                self._record(trial.trial_id, result[self._time_attr], values, decide=False)
        super().on_trial_complete(tune_controller, trial, result)  # the live-trial order

    def on_trial_error(self, tune_controller: Any, trial: Trial) -> None:
        """Nothing to undo: what the trial recorded at its rungs was measured, so it stays
        (as in Ray's ASHA); if Tune retries the trial, its rungs already recorded continue."""
        super().on_trial_error(tune_controller, trial)  # the live-trial order

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        """Nothing kept per trial besides its rung records, which stay (as on_trial_error)."""
        super().on_trial_remove(tune_controller, trial)  # the live-trial order

    def debug_string(self) -> str:
        rungs = " | ".join(f"{m:g}: {len(r)} recorded" for m, r in zip(self._milestones, self._rungs))
        return f"Using MO-ASHA: num_stopped={self._num_stopped}; rungs {rungs or 'none'}"

    def _values(self, result: dict) -> tuple[float, ...] | None:
        """The objective vector of a result, maximised; None if any metric is missing."""
        out = []
        for (metric, _), sign in zip(self._objectives, self._signs):
            value = result.get(metric)
            if value is None:
                return None
            out.append(sign * float(value))
        return tuple(out)

    def _record(self, trial_id: str, t: float, values: tuple[float, ...], decide: bool) -> bool:
        """Record the trial at the highest rung `t` reached (once per rung); True to continue."""
        reached = [k for k, m in enumerate(self._milestones) if t >= m]
        if not reached:
            return True
        rung = self._rungs[reached[-1]]
        if trial_id in rung:
            return True  # decided when it first reached this rung (also after a resume)
        rung[trial_id] = values
        if not decide:
            return True
        ids = list(rung)
        return promoted([rung[i] for i in ids], ids.index(trial_id), self._reduction_factor)

    # ------------------------------------------------------------------ saved state

    def get_state(self) -> dict[str, Any]:
        """The rungs and counters, plain data (picklable, small)."""
        return {
            "version": STATE_VERSION,
            "objectives": self._objectives,
            "milestones": self._milestones,
            "rungs": [dict(r) for r in self._rungs],
            "num_stopped": self._num_stopped,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Take back `get_state()`'s result; refuses a state of other objectives or rungs."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"MOASHA state version {state.get('version')!r}, expected {STATE_VERSION}")
        if tuple(map(tuple, state["objectives"])) != self._objectives or tuple(state["milestones"]) != self._milestones:
            raise ValueError(
                "MOASHA state is for objectives {} and rungs {}, this scheduler has {} and {}".format(
                    state["objectives"], state["milestones"], self._objectives, self._milestones
                )
            )
        self._rungs = [dict(r) for r in state["rungs"]]
        self._num_stopped = int(state["num_stopped"])

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    def state_callback(self) -> MOASHAState:
        """The Tune callback that carries this scheduler's rungs across `Tuner.restore`."""
        return MOASHAState(self)


class MOASHAState(Callback):
    """Checkpoints a `MOASHA`'s rungs with Tune's experiment state and sets them back on
    restore (Tune restores callbacks' state, not the scheduler's; module docstring)."""

    def __init__(self, scheduler: MOASHA):
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any]:
        return self.scheduler.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        self.scheduler.set_state(state)
