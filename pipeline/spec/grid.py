"""The grid sampler's points: every dimension of a search space as a finite list of values.

One implementation, read by `validate` (the size it prints and checks against `samples`) and by
`launch` (Optuna's GridSampler search space, pipeline.search), so that a spec both accept is
the grid both count.
"""

from __future__ import annotations

import math
from typing import Any

from pipeline.spec.types import Param, StudySpec
from syncmodel.errors import ConfigError

MAX_POINTS = 10_000  # per dimension: more is a typo (a step too small), not a grid


def grid_values(p: Param, limit: int = MAX_POINTS) -> list[Any]:
    """The values of one dimension, low to high (ConfigError naming `search.<name>` if the
    dimension has no finite set).

    An integer range is finite with or without `log` (log changes how a sampler draws, not
    which integers exist); a float range needs `step`. The count is floor((high-low)/step)+1
    (a last step that would pass `high` is left out; the 1e-9 absorbs float rounding).
    """
    if p.kind == "categorical":
        return list(p.choices or ())
    if p.kind == "fixed":
        return [p.value]
    if p.kind == "float" and p.step is None:
        raise ConfigError(f"search.{p.name}", "the grid sampler needs a finite set: give step, or choices")
    assert p.low is not None and p.high is not None
    step = p.step if p.step is not None else 1
    n = int(math.floor((p.high - p.low) / step + 1e-9)) + 1
    if n > limit:
        raise ConfigError(f"search.{p.name}", f"{n} grid points; at most {limit}")
    if p.kind == "int":
        return [int(p.low + i * step) for i in range(n)]
    return [round(p.low + i * step, 12) for i in range(n)]


def space_size(search: dict[str, Param]) -> int:
    """How many points the grid over `search` has (fixed entries count once)."""
    return math.prod(len(grid_values(p)) for p in search.values())


def grid_size(spec: StudySpec) -> int:
    return space_size(spec.search)
