"""The `scheduler: {name: mo_asha, ...}` section of a spec: its parser and parsed form.

Apart from the scheduler (pipeline.mo_asha, which imports Ray at module level) so that
`syncstudy validate` reads the section without importing Ray; `MOASHASpec.scheduler()`
imports the scheduler only when a study is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.spec.metrics import METRICS, per_epoch_metrics
from syncmodel.config import coerce
from syncmodel.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from pipeline.mo_asha import MOASHA

MODES = ("max", "min")


SPEC_KEYS = ("name", "grace_period", "reduction_factor", "objectives")


class _Objective(Protocol):
    metric: str
    mode: str


@dataclass(frozen=True)
class MOASHASpec:
    """`scheduler: {name: mo_asha, ...}` parsed: the rung signals with resolved modes."""

    grace_period: int = 1
    reduction_factor: float = 2.0
    objectives: tuple[tuple[str, str], ...] = ()  # (per-epoch metric, mode)
    name: str = "mo_asha"

    def scheduler(self, max_t: int, time_attr: str = "epoch") -> MOASHA:
        from pipeline.mo_asha import MOASHA

        return MOASHA(
            self.objectives, time_attr=time_attr, max_t=max_t,
            grace_period=self.grace_period, reduction_factor=self.reduction_factor,
        )  # fmt: skip


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_mo_asha(raw: dict[str, Any], objectives: Sequence[_Objective], epochs: int) -> MOASHASpec:
    """The `scheduler:` mapping of a spec with `name: mo_asha`, checked; `ConfigError` names
    `scheduler.<field>`.

    Fields: `grace_period` (int >= 1 and < epochs: the first rung; default 1),
    `reduction_factor` (number > 1; default 2), `objectives` (the per-epoch signals compared at
    each rung: a list of metric names or {metric, mode} mappings; a mode defaults to the study
    objective's mode for that metric, else the metric's own; default: the study's objectives,
    which must then all be per-epoch). `objectives`: the study's parsed objectives (each with
    `.metric` and `.mode`); `epochs`: train.epochs.
    """
    if not isinstance(raw, dict):
        raise ConfigError("scheduler", f"must be a mapping, got {type(raw).__name__} {_short(raw)}")
    for key in raw:
        if key not in SPEC_KEYS:
            raise ConfigError(f"scheduler.{key}", f"unknown key for scheduler mo_asha; known: {', '.join(SPEC_KEYS)}")
    name = coerce(raw.get("name", "mo_asha"), str, "scheduler.name")
    if name != "mo_asha":
        raise ConfigError("scheduler.name", f"parse_mo_asha reads scheduler mo_asha, got {_short(name)}")
    grace = coerce(raw.get("grace_period", 1), int, "scheduler.grace_period")
    if grace < 1:
        raise ConfigError("scheduler.grace_period", f"must be >= 1, got {grace}")
    if grace >= epochs:
        raise ConfigError(
            "scheduler.grace_period",
            f"must be < train.epochs ({epochs}), got {grace}: a rung at the last epoch stops nothing",
        )
    factor = coerce(raw.get("reduction_factor", 2.0), float, "scheduler.reduction_factor")
    if factor <= 1:
        raise ConfigError("scheduler.reduction_factor", f"must be > 1, got {factor:g}")
    study_modes = {o.metric: o.mode for o in objectives}
    if "objectives" in raw:
        signals = _parse_signals(raw["objectives"], study_modes)
    else:
        late = [o.metric for o in objectives if not (o.metric in METRICS and METRICS[o.metric].per_epoch)]
        if late:
            raise ConfigError(
                "scheduler.objectives",
                f"required: the objective {late[0]} is known only at the end of a trial; name the "
                f"per-epoch signals compared at each rung ({', '.join(per_epoch_metrics())})",
            )
        signals = tuple((o.metric, o.mode) for o in objectives)
    return MOASHASpec(grace_period=grace, reduction_factor=factor, objectives=signals)


def _parse_signals(raw: Any, study_modes: dict[str, str]) -> tuple[tuple[str, str], ...]:
    path = "scheduler.objectives"
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, f"must be a non-empty list of per-epoch metrics, got {_short(raw)}")
    out: list[tuple[str, str]] = []
    for i, entry in enumerate(raw):
        where = f"{path}[{i}]"
        mode = None
        if isinstance(entry, dict):
            for key in entry:
                if key not in ("metric", "mode"):
                    raise ConfigError(f"{where}.{key}", "unknown key; known: metric, mode")
            if "metric" not in entry:
                raise ConfigError(f"{where}.metric", "required")
            metric = coerce(entry["metric"], str, f"{where}.metric")
            where_metric = f"{where}.metric"
            if entry.get("mode") is not None:
                mode = coerce(entry["mode"], str, f"{where}.mode")
                if mode not in MODES:
                    raise ConfigError(f"{where}.mode", f"must be max or min, got {_short(mode)}")
        else:
            metric = coerce(entry, str, where)
            where_metric = where
        info = METRICS.get(metric)
        if info is None or not info.per_epoch:
            raise ConfigError(
                where_metric,
                f"must be a per-epoch metric ({', '.join(per_epoch_metrics())}), got {_short(metric)}",
            )
        if any(metric == m for m, _ in out):
            raise ConfigError(where_metric, f"{metric} is listed twice")
        out.append((metric, mode or study_modes.get(metric, info.mode)))
    return tuple(out)
