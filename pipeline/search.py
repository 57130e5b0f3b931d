"""A study's search space and sampler → Optuna distributions, an Optuna sampler and the Tune
searcher (`OptunaSearch` in a `ConcurrencyLimiter`). The one module that knows Optuna.

Searched params travel as plain values in Tune's trial config; `decode_params` turns them back
into `TrainConfig` values (categorical choices Optuna cannot store, such as lists, travel as
their JSON text).
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

from pipeline.repeats import REASKS, Point, Repeats, point_of, space_size
from pipeline.spec.grid import grid_values
from pipeline.spec.types import Param, StudySpec
from syncmodel.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import optuna

_PLAIN = (type(None), bool, int, float, str)
# A child of Optuna's logger: `launch` sends Optuna's records to the study's launch.log.
_log = logging.getLogger("optuna.syncstudy")


def fixed_params(spec: StudySpec) -> dict[str, Any]:
    """`kind: fixed` entries of the search block: applied to every trial's config."""
    return {name: p.value for name, p in spec.search.items() if p.kind == "fixed"}


def _encode(value: Any) -> Any:
    return value if isinstance(value, _PLAIN) else json.dumps(value, sort_keys=True)


def decode_params(space: dict[str, Param], raw: dict[str, Any]) -> dict[str, Any]:
    """Tune's sampled values → `TrainConfig` values (JSON-encoded choices decoded)."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        param = space.get(name)
        if param is not None and param.kind == "categorical" and param.choices is not None:
            for choice in param.choices:
                if _encode(choice) == value:
                    value = choice
                    break
        elif param is not None and param.kind == "int" and isinstance(value, float):
            value = int(value)
        out[name] = value
    return out


def distributions(spec: StudySpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions for the searched dimensions, in spec order."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for name, p in spec.searched().items():
        field = f"search.{name}"
        if p.kind == "float":
            out[name] = FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)
        elif p.kind == "int":
            step = int(p.step) if p.step else 1
            out[name] = IntDistribution(int(p.low), int(p.high), log=p.log, step=step)
        elif p.kind == "categorical":
            out[name] = CategoricalDistribution(tuple(_encode(c) for c in p.choices or ()))
        else:
            raise ConfigError(field + ".kind", f"unknown kind {p.kind!r}")
    return out


def grid_space(spec: StudySpec) -> dict[str, list[Any]]:
    """The grid sampler's search space: every searched dimension's points
    (`pipeline.spec.grid.grid_values`, the count `validate` checks), encoded as Tune carries
    them."""
    return {name: [_encode(v) for v in grid_values(p)] for name, p in spec.searched().items()}


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named by `sampler.name` (seeded by `sampler.seed`)."""
    import optuna

    s = spec.sampler
    if s.name == "tpe":
        startup = s.n_startup_trials if s.n_startup_trials is not None else 10
        # multivariate TPE models the coupling between lambda_focus, coupling_K and epsilon
        return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=startup, multivariate=True)
    if s.name == "nsga2":
        population = s.population_size
        if population is None:
            # A population of about a quarter of the budget gives small studies a few generations.
            population = min(50, max(2, spec.concurrency, spec.samples // 4))
        return optuna.samplers.NSGAIISampler(seed=s.seed, population_size=population)
    if s.name == "gp":
        # Gaussian-process Bayesian optimisation (log EHVI with several objectives); needs torch
        startup = s.n_startup_trials if s.n_startup_trials is not None else 10
        return optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=startup)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.name == "grid":
        return optuna.samplers.GridSampler(grid_space(spec), seed=s.seed)
    raise ConfigError("sampler.name", f"unknown sampler {s.name!r}; known: gp, grid, nsga2, random, tpe")


def objective_values(result: dict[str, Any] | None, metrics: list[str]) -> list[float] | None:
    """The objectives of a final result, or None when one is missing or not finite."""
    if not result:
        return None
    values = []
    for m in metrics:
        v = result.get(m)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            return None
        values.append(float(v))
    return values


# The repeats of each study this process runs, by study name: the searcher Tune runs may be a
# copy of the one `make_searcher` built (restored from the study folder on --resume), so the
# study's summary finds its counts here (`repeats_of`).
_REPEATS: dict[str, Repeats] = {}


def repeats_of(study: str) -> Repeats:
    """What the searcher of `study` did with repeated proposals in this process (pipeline.repeats);
    counts made before a --resume travel with the searcher's saved state."""
    return _REPEATS.get(study, Repeats())


def forget_repeats(study: str) -> None:
    """Drop the counts of an earlier run of `study` in this process (tests run several)."""
    _REPEATS.pop(study, None)


def make_searcher(spec: StudySpec):  # noqa: ANN201 - a ray.tune Searcher
    """`OptunaSearch` over the spec's space and objectives, limited to `concurrency` trials."""
    from ray.tune.search import ConcurrencyLimiter

    metrics = [o.metric for o in spec.objectives]
    modes = [o.mode for o in spec.objectives]
    searcher = searcher_class()(
        space=distributions(spec),
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        sampler=make_sampler(spec),
        study_name=spec.name,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=max(1, spec.concurrency))


def searcher_class() -> type:
    """`StudySearcher`: built on first use so that importing this module does not import Ray."""
    if "StudySearcher" in globals():
        return globals()["StudySearcher"]
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class _StudySearcher(OptunaSearch):
        """OptunaSearch told only final results (see pipeline.study), and never training a
        config twice (pipeline.repeats).

        Ray's OptunaSearch reports every intermediate result to Optuna (`result[metric]`, a
        KeyError for metrics known only at the end) and tells Optuna a multi-objective trial
        with a missing value as COMPLETE (Optuna refuses, the trial stays RUNNING). Here a
        trial is COMPLETE with finite objectives, PRUNED when the scheduler stopped it
        before its final result, and FAIL otherwise.

        Its state (Tune pickles `__dict__` for --resume) adds `_points` (point → the trial
        that trains it, running or COMPLETE), `_point_of` (trial id → point), `_held`
        (trial id → Optuna trials that repeat it while it runs) and `_repeats` (counts).
        A searcher saved before they existed rebuilds them from `_ot_trials` (`_index`).
        """

        def restore(self, checkpoint_path: str) -> None:
            super().restore(checkpoint_path)
            self._index()  # --resume: the summary's counts include the earlier drivers'

        def _index(self) -> dict[Point, str]:
            if "_points" not in self.__dict__:
                self._points: dict[Point, str] = {}
                self._point_of: dict[str, Point] = {}
                self._held: dict[str, list[Any]] = {}
                self._repeats = Repeats()
                self._said_used_up = False
                by_number = {t.number: t for t in self._ot_study.get_trials(deepcopy=False)}
                for tid, ot_trial in self._ot_trials.items():
                    frozen = by_number[ot_trial.number]
                    point = point_of(frozen.params, self._space)
                    self._point_of[tid] = point
                    if tid not in self._completed_trials or frozen.state == TrialState.COMPLETE:
                        self._points.setdefault(point, tid)
            _REPEATS[self._study_name] = self._repeats
            return self._points

        def _tell(self, ot_trial: Any, values: list[float] | None, state: Any = None) -> None:
            try:
                if values is not None:
                    self._ot_study.tell(ot_trial, values if len(values) > 1 else values[0])
                else:
                    self._ot_study.tell(ot_trial, state=state)
            except RuntimeError as exc:
                # GridSampler calls study.stop() once the grid is used up, which Optuna allows
                # only inside optimize(); the trial is already recorded by then.
                if "Study.stop" not in str(exc):
                    raise

        def suggest(self, trial_id: str) -> dict | None:
            """Optuna's next point, never one a trial of this study trains or trained to the
            end: a repeat of a COMPLETE trial is told that trial's values (the same config,
            seed included, gives the same result: a seeded trainer; a sampler that learns
            from it sees what training it again would have shown), a repeat of a running
            trial is held and told that trial's outcome when it ends, and the sampler is
            asked again. Neither becomes a Tune trial. After `REASKS` repeats in a row, or
            when a finite space has no untried point left, the repeat is trained (said once
            in launch.log). NSGA-II's offspring copy their parents' values, so small or
            discrete spaces repeat often."""
            points = self._index()
            if trial_id in self._point_of:  # asked again for a trial it already answered
                return super().suggest(trial_id)
            size = space_size(self._space)
            for asks in range(REASKS + 1):
                params = super().suggest(trial_id)
                ot_trial = self._ot_trials[trial_id]
                point = point_of(ot_trial.params, self._space)
                same = points.get(point)
                if same is None:
                    break
                if asks == REASKS or (size is not None and len(points) >= size):
                    self._repeats.trained += 1
                    if not self._said_used_up:
                        self._said_used_up = True
                        _log.warning(
                            "%s: the sampler proposes only configs already trained or running "
                            "(%d asks); training repeats from now on (the search space is used up)",
                            self._study_name, asks + 1,
                        )  # fmt: skip
                    break
                del self._ot_trials[trial_id]
                if same in self._completed_trials:
                    done = self._ot_study.get_trials(deepcopy=False)[self._ot_trials[same].number]
                    self._tell(ot_trial, list(done.values))
                    self._repeats.reused += 1
                    how = "given its result"
                else:
                    self._held.setdefault(same, []).append(ot_trial)
                    self._repeats.waited += 1
                    how = "to be given its result when it ends"
                _log.info("%s: not trained: a repeat of trial %s (%s), %s", self._study_name, same, params, how)
            points.setdefault(point, trial_id)
            self._point_of[trial_id] = point
            return params

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            return None  # ASHA, not Optuna's pruner, stops trials early

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            self._index()
            metrics = self._metric if isinstance(self._metric, list) else [self._metric]
            values = None if error else objective_values(result, metrics)
            ot_trial = self._ot_trials[trial_id]
            self._completed_trials.add(trial_id)  # first: a failing tell is never retried
            if values is not None:
                state = TrialState.COMPLETE
            elif not error and result and not result.get("final"):
                state = TrialState.PRUNED
            else:
                state = TrialState.FAIL
            if state != TrialState.COMPLETE:
                # not a result to reuse: a later proposal of this point is trained
                point = self._point_of.get(trial_id)
                if self._points.get(point) == trial_id:
                    del self._points[point]
            self._tell(ot_trial, values, state)
            for held in self._held.pop(trial_id, []):
                # the repeats share its outcome; one that did not finish is not theirs
                # (FAIL: not evaluated, samplers leave it out)
                self._tell(held, values, TrialState.FAIL)

    _StudySearcher.__name__ = _StudySearcher.__qualname__ = "StudySearcher"
    _StudySearcher.__module__ = __name__
    globals()["StudySearcher"] = _StudySearcher  # pickled by reference with Tune's state
    return _StudySearcher


def __getattr__(name: str) -> Any:
    # Unpickling Tune's saved searcher looks the class up here before anything built it.
    if name == "StudySearcher":
        return searcher_class()
    raise AttributeError(name)
