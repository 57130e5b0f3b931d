"""Study spec YAML → typed, validated objects: the one place where user errors are found.

CONTRACT (types below are fixed; the loader is filled in by the spec work):
    load_spec(path, *, smoke=False, overrides=None) -> StudySpec
raises `syncmodel.errors.ConfigError` (field named like `search.coupling_K.low`) on any
problem, before anything is started.
"""

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
    step: float | None = None  # int / float quantisation (grid sampler uses it)
    choices: tuple[Any, ...] | None = None  # categorical
    value: Any = None  # fixed


@dataclass(frozen=True)
class Objective:
    metric: str  # a metric a trial reports, e.g. "test_acc", "interpretability"
    mode: str  # "max" | "min"


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"  # tpe | nsga2 | random | grid
    seed: int | None = 0
    n_startup_trials: int | None = None  # TPE


@dataclass(frozen=True)
class SchedulerSpec:
    name: str = "none"  # none | asha
    grace_period: int = 1
    reduction_factor: float = 2.0
    metric: str | None = None  # ASHA's rung metric (per-epoch); default "val_acc"/max
    mode: str = "max"


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0  # fractional allowed: 0.25 packs four trials per GPU


@dataclass(frozen=True)
class TrackingSpec:
    uri: str | None = None  # None → sqlite:///<storage>/mlflow.db (absolute)
    experiment: str | None = None  # None → the study name
    artifact_location: str | None = None  # None → <storage>/mlartifacts (local store only)


@dataclass(frozen=True)
class EvaluationSpec:
    """Interpretability evaluation after each trial (syncmodel.evaluate)."""

    enabled: bool = True
    max_images: int = 1000
    pictures: bool = True


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

    def trial_config(self, params: dict[str, Any]) -> TrainConfig:
        """The full config of one trial: the fixed part with the sampled params applied."""
        return TrainConfig.from_dict({**self.train.to_dict(), **params})

    def primary(self) -> Objective:
        return self.objectives[0]


def load_spec(path: str | Path, *, smoke: bool = False, overrides: dict[str, Any] | None = None) -> StudySpec:
    raise NotImplementedError("filled in by the spec work")
