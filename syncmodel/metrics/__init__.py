"""Interpretability metrics from several aspects (docs/design.md §1.4), one file per aspect.

Each metric is a pure function of tensors (or of a model and data) citing its source.
"""

from __future__ import annotations

from syncmodel.metrics.detectors import PartDetectors, part_detectors, unit_thresholds
from syncmodel.metrics.distributed import (
    between_module_distributedness,
    distributedness,
    effective_neurons,
    effective_units,
    module_distributedness,
    module_responses,
    unit_responses,
)
from syncmodel.metrics.focus import peak_mass, spatial_entropy, spatial_spread
from syncmodel.metrics.location import (
    halves,
    inference_positions,
    location_instability,
    location_instability_heldout,
    location_instability_part_heldout,
    part_instability,
)
from syncmodel.metrics.modules import (
    heldout_specificity,
    is_degenerate,
    largest_module_share,
    module_ablation,
    module_consistency,
    module_consistency_corrected,
    module_specificity,
)
from syncmodel.metrics.position import position_information
from syncmodel.metrics.score import (
    accuracy_gain,
    collapse_gates,
    interpretability,
    interpretability_v1,
    interpretability_v2,
    neuron_scores,
)
from syncmodel.metrics.semantic import class_means, class_selectivity, mis, mis_chance

__all__ = [
    "PartDetectors",
    "accuracy_gain",
    "between_module_distributedness",
    "class_means",
    "class_selectivity",
    "collapse_gates",
    "distributedness",
    "effective_neurons",
    "effective_units",
    "halves",
    "heldout_specificity",
    "inference_positions",
    "interpretability",
    "interpretability_v1",
    "interpretability_v2",
    "is_degenerate",
    "largest_module_share",
    "location_instability",
    "location_instability_heldout",
    "location_instability_part_heldout",
    "mis",
    "mis_chance",
    "module_ablation",
    "module_consistency",
    "module_consistency_corrected",
    "module_distributedness",
    "module_responses",
    "module_specificity",
    "neuron_scores",
    "part_detectors",
    "part_instability",
    "peak_mass",
    "position_information",
    "spatial_entropy",
    "spatial_spread",
    "unit_responses",
    "unit_thresholds",
]
