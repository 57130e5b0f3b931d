"""Interpretability metrics from several aspects (docs/design.md §1.4), one file per aspect.

Each metric is a pure function of tensors (or of a model and data) citing its source.
"""

from __future__ import annotations

from syncmodel.metrics.detectors import PartDetectors, part_detectors, unit_thresholds
from syncmodel.metrics.focus import peak_mass, spatial_entropy, spatial_spread
from syncmodel.metrics.location import inference_positions, location_instability, top_images
from syncmodel.metrics.modules import module_ablation, module_consistency, module_specificity
from syncmodel.metrics.score import interpretability, neuron_scores
from syncmodel.metrics.semantic import class_means, class_selectivity, mis

__all__ = [
    "PartDetectors",
    "class_means",
    "class_selectivity",
    "inference_positions",
    "interpretability",
    "location_instability",
    "mis",
    "module_ablation",
    "module_consistency",
    "module_specificity",
    "neuron_scores",
    "part_detectors",
    "peak_mass",
    "spatial_entropy",
    "spatial_spread",
    "top_images",
    "unit_thresholds",
]
