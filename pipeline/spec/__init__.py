"""Study specs: the typed parts (types), the YAML reader (reading), the section checks
(sections), loading and dumping (load), the grid's points (grid) and the metric catalogue
(metrics). Arrows point down: load → sections → grid, metrics, reading → types.

Nothing here imports Ray, MLflow or Optuna.
"""

from __future__ import annotations

from pipeline.spec.grid import grid_size, grid_values
from pipeline.spec.load import check_fits_local, dump_resolved, load_spec, spec_to_dict
from pipeline.spec.reading import SpecError
from pipeline.spec.types import (
    EvaluationSpec,
    Objective,
    Param,
    Resources,
    SamplerSpec,
    SchedulerSpec,
    StudySpec,
    TrackingSpec,
    describe,
)

__all__ = [
    "Param", "Objective", "SamplerSpec", "SchedulerSpec", "Resources", "TrackingSpec",
    "EvaluationSpec", "StudySpec", "SpecError", "load_spec", "spec_to_dict", "dump_resolved",
    "check_fits_local", "describe", "grid_values", "grid_size",
]  # fmt: skip
