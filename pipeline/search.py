"""A study's search space and sampler → Optuna distributions, an Optuna sampler and the Tune
searcher (`OptunaSearch` in a `ConcurrencyLimiter`). The one module that knows Optuna.

Searched params travel as plain values in Tune's trial config; `decode_params` turns them back
into `TrainConfig` values (categorical choices Optuna cannot store, such as lists, travel as
their JSON text).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from pipeline.spec.grid import grid_values
from pipeline.spec.types import Param, StudySpec
from syncmodel.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import optuna

_PLAIN = (type(None), bool, int, float, str)


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
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    if s.name == "grid":
        return optuna.samplers.GridSampler(grid_space(spec), seed=s.seed)
    raise ConfigError("sampler.name", f"unknown sampler {s.name!r}; known: grid, nsga2, random, tpe")


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


REASKS = 20  # asks for a new point before a repeat is trained after all (a used-up space)


def _completed_with(study: optuna.Study, params: dict[str, Any]) -> optuna.trial.FrozenTrial | None:
    """The first COMPLETE trial of `study` with exactly `params`, or None."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.params == params:
            return t
    return None


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
        """OptunaSearch told only final results (see pipeline.study).

        Ray's OptunaSearch reports every intermediate result to Optuna (`result[metric]`, a
        KeyError for metrics known only at the end) and tells Optuna a multi-objective trial
        with a missing value as COMPLETE (Optuna refuses, the trial stays RUNNING). Here a
        trial is COMPLETE with finite objectives, PRUNED when the scheduler stopped it
        before its final result, and FAIL otherwise.
        """

        def suggest(self, trial_id: str) -> dict | None:
            """Optuna's next point, never one already trained to the end: a point equal to a
            COMPLETE trial's is told that trial's values again (the same config gives the same
            result: a seeded trainer) and the sampler is asked again, up to `REASKS` times.
            NSGA-II's offspring repeat parents in small discrete spaces (`make demo` trained
            one point twice)."""
            params = super().suggest(trial_id)
            for _ in range(REASKS):
                ot_trial = self._ot_trials.get(trial_id)
                done = _completed_with(self._ot_study, ot_trial.params) if ot_trial else None
                if done is None:
                    break
                del self._ot_trials[trial_id]
                self._ot_study.tell(ot_trial, done.values if len(done.values) > 1 else done.values[0])
                params = super().suggest(trial_id)
            return params

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            return None  # ASHA, not Optuna's pruner, stops trials early

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            metrics = self._metric if isinstance(self._metric, list) else [self._metric]
            values = None if error else objective_values(result, metrics)
            ot_trial = self._ot_trials[trial_id]
            self._completed_trials.add(trial_id)  # first: a failing tell is never retried
            try:
                if values is not None:
                    self._ot_study.tell(ot_trial, values if len(values) > 1 else values[0])
                elif not error and result and not result.get("final"):
                    self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
                else:
                    self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            except RuntimeError as exc:
                # GridSampler calls study.stop() once the grid is used up, which Optuna allows
                # only inside optimize(); the trial is already recorded by then.
                if "Study.stop" not in str(exc):
                    raise

    _StudySearcher.__name__ = _StudySearcher.__qualname__ = "StudySearcher"
    _StudySearcher.__module__ = __name__
    globals()["StudySearcher"] = _StudySearcher  # pickled by reference with Tune's state
    return _StudySearcher


def __getattr__(name: str) -> Any:
    # Unpickling Tune's saved searcher looks the class up here before anything built it.
    if name == "StudySearcher":
        return searcher_class()
    raise AttributeError(name)
