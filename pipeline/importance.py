"""Which searched parameters matter: Optuna's parameter importances (fANOVA, Hutter et al.
2014) of one objective over trials read from the study tables.

Optuna computes importances from a study, so an in-memory one is rebuilt from the trials
(`create_study` + `add_trials`), each trial's params under the distributions the study was
searched with (`pipeline.search.distributions`): the same space Optuna sampled.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.spec.types import StudySpec

SEED = 0  # fANOVA's random forest: the same trials give the same importances


def param_importances(spec: StudySpec, rows: list[Any], metric: str, mode: str) -> dict[str, float]:
    """Importance of each searched param of `spec` for `metric` over `rows` (`TrialRow`s:
    params, metrics, status), largest first, summing to 1. Trials with status ok, a finite
    value and every param inside the space count; {} when fewer than two do, or when the
    objective or no param varies (nothing to attribute)."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    from pipeline import search

    dists = search.distributions(spec)
    if not dists:
        return {}
    trials = []
    for r in rows:
        value = r.metrics.get(metric)
        if r.status != "ok" or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        params = _params(r.params, dists)
        if params is None:
            continue
        trials.append(optuna.trial.create_trial(params=params, distributions=dists, value=float(value)))
    if len(trials) < 2 or len({t.value for t in trials}) < 2:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    study.add_trials(trials)
    try:
        found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=SEED))
    except RuntimeError:  # fANOVA: "zero total variance in all trees" (no param varies)
        return {}
    return {name: float(v) for name, v in found.items()}


def _params(config: dict[str, Any], dists: dict[str, Any]) -> dict[str, Any] | None:
    """The trial's searched values as Optuna's distributions hold them (a choice encoded as
    the searcher encodes it); None when one is missing or outside its distribution."""
    from pipeline.search import _encode

    out: dict[str, Any] = {}
    for name, dist in dists.items():
        if name not in config or config[name] is None:
            return None
        value = config[name]
        if hasattr(dist, "choices"):
            value = _encode(value)
        elif type(dist.low) is int:
            value = int(value)
        else:
            value = float(value)
        try:
            if not dist._contains(dist.to_internal_repr(value)):
                return None
        except (ValueError, TypeError):
            return None
        out[name] = value
    return out
