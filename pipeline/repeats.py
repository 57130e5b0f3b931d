"""Repeated points: when a sampler's proposal is a config the study already trained or is
training. The searcher (pipeline.search.StudySearcher) asks these helpers; Optuna's own
calls stay there.

A point is the searched params after the spec's rounding: a stepped float range is compared
by its step index (Optuna computes `low + k * step` in float arithmetic, where two ways to the
same k may differ in the last bit), an int range as an int, an unstepped float exactly, a
choice by its encoded value. Fixed entries and `train:` are the same for every trial, so they
never tell two points apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Asks for a new point before a repeat is trained after all. Asking is cheap next to a trial
# (milliseconds for TPE over a few hundred trials), and a space of continuous ranges almost
# never gives this many repeats in a row; a finite space that is used up is caught before
# (`space_size`), so this cap is met only by a sampler stuck on a few points.
REASKS = 100

Point = tuple[tuple[str, Any], ...]


def point_of(params: dict[str, Any], distributions: dict[str, Any]) -> Point:
    """The comparable form of a proposal's `params` (Optuna's values) under `distributions`."""
    out = []
    for name in sorted(params):
        value = params[name]
        dist = distributions.get(name)
        step = getattr(dist, "step", None)
        low = getattr(dist, "low", None)
        if isinstance(value, bool) or dist is None or not hasattr(dist, "low"):
            pass  # a choice (Optuna's CategoricalDistribution) or a param the space lacks
        elif isinstance(value, (int, float)) and step and not getattr(dist, "log", False):
            value = ("step", round((float(value) - float(low)) / float(step)))
        elif isinstance(value, (int, float)) and type(low) is int:
            value = int(value)
        elif isinstance(value, (int, float)):
            value = float(value)
        out.append((name, value))
    return tuple(out)


def space_size(distributions: dict[str, Any]) -> int | None:
    """How many distinct points the space holds, or None when a dimension is continuous."""
    size = 1
    for dist in distributions.values():
        choices = getattr(dist, "choices", None)
        if choices is not None:
            size *= len(choices)
            continue
        low, high, step = dist.low, dist.high, getattr(dist, "step", None)
        if type(low) is int:
            step = step or 1
            if getattr(dist, "log", False):
                step = 1  # an int log range: every integer is a point
            size *= (high - low) // step + 1
        elif step:
            size *= int(math.floor((high - low) / step + 1e-9)) + 1
        else:
            return None
    return size


@dataclass
class Repeats:
    """What the searcher did with repeated proposals; none of them is a trial (no row in the
    tables, no MLflow run): they are Optuna trials only.

    reused: equal to a finished (COMPLETE) trial, told that trial's objective values.
    waited: equal to a running trial, told its outcome when it ended.
    trained: trained after all, the space being used up (or `REASKS` asks all repeats).
    """

    reused: int = 0
    waited: int = 0
    trained: int = 0

    @property
    def skipped(self) -> int:
        return self.reused + self.waited

    def line(self) -> str:
        """One line for the study's summary, or "" when the sampler never repeated itself."""
        if not (self.skipped or self.trained):
            return ""
        parts = []
        if self.skipped:
            parts.append(
                f"{self.skipped} proposals repeated a trained or running config and were not "
                f"trained ({self.reused} given a finished trial's result, {self.waited} a running one's)"
            )
        if self.trained:
            parts.append(f"{self.trained} repeats trained anyway (the search space was used up)")
        return "repeats: " + "; ".join(parts)
