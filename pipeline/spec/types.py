"""The typed parts of a study spec (what `pipeline.spec.load_spec` returns); plain data, no
checks: every check is in pipeline.spec.sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncmodel.config import TrainConfig


@dataclass(frozen=True)
class Param:
    """One search-space dimension over a `TrainConfig` field."""

    name: str  # a TrainConfig field name
    kind: str  # "float" | "int" | "categorical" | "fixed"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None  # int / float quantisation (grid sampler uses it); None: int → 1
    choices: tuple[Any, ...] | None = None  # categorical
    value: Any = None  # fixed


@dataclass(frozen=True)
class Objective:
    metric: str  # a metric a trial reports (pipeline.spec.metrics), e.g. "test_acc"
    mode: str  # "max" | "min"


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"  # tpe | nsga2 | gp | random | grid
    seed: int | None = 0
    n_startup_trials: int | None = None  # TPE, GP (None → Optuna's default, 10)
    population_size: int | None = None  # NSGA-II (None → pipeline.search picks one)


@dataclass(frozen=True)
class SchedulerSpec:
    name: str = "none"  # none | asha | mo_asha
    grace_period: int = 1
    reduction_factor: float = 2.0
    metric: str | None = None  # ASHA's rung metric (per-epoch); always set once resolved
    mode: str = "max"
    # MO-ASHA's rung signals, (per-epoch metric, mode) pairs; empty for none / asha
    objectives: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0  # fractional allowed: 0.25 packs four trials per GPU


@dataclass(frozen=True)
class TrackingSpec:
    uri: str | None = None  # None → sqlite:///<storage>/mlflow.db (absolute); ${VAR}s expanded
    experiment: str | None = None  # None → the study name
    artifact_location: str | None = None  # None → <storage>/mlartifacts (local store only)
    uri_source: str | None = None  # the uri as written, when it held ${VAR}s (safe to log)
    note: str | None = None  # a warning about the uri (a sqlite ?query ignored), for launch/validate


@dataclass(frozen=True)
class EvaluationSpec:
    """Interpretability evaluation after each trial (syncmodel.evaluate)."""

    enabled: bool = True
    max_images: int = 1000
    pictures: bool = True
    # The split a trial's evaluation measures: "val" (its objectives are then selected on
    # validation images, and the test split stays a report) or "test".
    split: str = "val"


@dataclass
class StudySpec:
    name: str
    train: TrainConfig  # the fixed part of every trial's config
    search: dict[str, Param] = field(default_factory=dict)
    objectives: list[Objective] = field(default_factory=list)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    samples: int = 8
    concurrency: int = 1
    resources: Resources = field(default_factory=Resources)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    storage: str | None = None  # None → ./runs/<name> (absolute once resolved)
    retries: int = 0  # re-runs of a failed trial from its last checkpoint
    source: Path | None = None  # the file it was read from
    smoke: bool = False  # the smoke form was applied
    description: str = ""

    def primary(self) -> Objective:
        return self.objectives[0]

    def searched(self) -> dict[str, Param]:
        """The dimensions the sampler samples (everything but `kind: fixed`), in spec order."""
        return {name: p for name, p in self.search.items() if p.kind != "fixed"}


def describe(p: Param) -> str:
    """One short line for a dimension: `float [0.001, 1] log`, `choice a | b`, `fixed 0.002`."""
    if p.kind == "fixed":
        return f"fixed   {p.value!r}"
    if p.kind == "categorical":
        return "choice  " + " | ".join(str(c) for c in p.choices or ())
    text = f"{p.kind:<7} [{p.low:g}, {p.high:g}]"
    if p.log:
        text += " log"
    if p.step is not None:
        text += f" step {p.step:g}"
    return text
