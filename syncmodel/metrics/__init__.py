"""Interpretability metrics from several aspects (docs/design.md §1.4), one file per aspect.

Each metric is a pure function of tensors (or of a model and data) citing its source.
"""

from __future__ import annotations

from syncmodel.metrics.detectors import PartDetectors, part_detectors, unit_thresholds
from syncmodel.metrics.focus import peak_mass, spatial_entropy, spatial_spread
from syncmodel.metrics.location import (
    halves,
    inference_positions,
    location_instability,
    location_instability_heldout,
    location_instability_part_heldout,
    part_instability,
)
from syncmodel.metrics.modules import module_ablation, module_consistency, module_specificity
from syncmodel.metrics.score import interpretability, neuron_scores
from syncmodel.metrics.semantic import class_means, class_selectivity, mis, mis_chance

__all__ = [
    "PartDetectors",
    "class_means",
    "class_selectivity",
    "halves",
    "inference_positions",
    "interpretability",
    "location_instability",
    "location_instability_heldout",
    "location_instability_part_heldout",
    "mis",
    "mis_chance",
    "module_ablation",
    "module_consistency",
    "module_specificity",
    "neuron_scores",
    "part_detectors",
    "part_instability",
    "peak_mass",
    "spatial_entropy",
    "spatial_spread",
    "unit_thresholds",
]
