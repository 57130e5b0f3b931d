"""The one composite `interpretability` score in [0, 1], the search objective (docs/design.md §1.4).

Neuron term (focused and class-specific live neurons) plus module term (covering, consistent,
class-pure modules); dead, near-dead, constant and fixed-position neurons all score 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def neuron_scores(
    entropy: Tensor, selectivity: Tensor, active_fraction: Tensor, num_classes: int
) -> Tensor:
    """Per-neuron interpretability `s_c = g_c * sqrt(f_c * S_c)` in [0, 1].

    - focus `f_c = 1 - H_c`, H_c the neuron's mean normalised spatial entropy over the images
      where it fires (`spatial_entropy`); 0 if it never fires;
    - selectivity `S_c`: class selectivity index (Morcos et al. 2018), 0 for constant or dead;
    - activity gate `g_c = min(1, K * a_c)`, a_c the fraction of images on which the neuron
      fires at all, K classes: a neuron firing on fewer images than one class's share counts
      proportionally less, a dead one not at all.
    The geometric mean needs both: a neuron that fires at one fixed pixel on every image is
    focused but not selective (score 0); a class detector with diffuse maps scores low.

    Args:
        entropy, selectivity, active_fraction: (C,) per neuron (NaN entropy = never fires).
        num_classes: K.
    Returns:
        (C,) float32.
    """
    focus = (1 - torch.nan_to_num(entropy.float(), nan=1.0)).clamp(0, 1)
    gate = (active_fraction.float() * num_classes).clamp(0, 1)
    return gate * (focus * selectivity.float().clamp(0, 1)).sqrt()


def interpretability(scores: Tensor, coverage: float, consistency: float, purity: float) -> float:
    """Composite score `I = (mean_c s_c + coverage * max(0, ARI) * purity) / 2` in [0, 1].

    Args:
        scores: (C,) `neuron_scores` of all neurons of the layer (dead ones included, as 0).
        coverage: fraction of neurons in a module (of >= 2 neurons).
        consistency: ARI between the modules found on two disjoint halves of the data.
        purity: mean module class purity (`module_specificity`, 0..1).
    Over-synchronising cannot game the module term: one module of everything is perfectly
    consistent and covering, but its mean response is not class-pure. NaN inputs (no modules)
    count as 0. Cheap: one pass of activations plus three Sync runs (whole data, two halves).
    """

    def clean(v: float) -> float:
        return 0.0 if v is None or math.isnan(v) else min(max(float(v), 0.0), 1.0)

    neuron_term = float(scores.float().mean()) if scores.numel() else 0.0
    module_term = clean(coverage) * clean(consistency) * clean(purity)
    return 0.5 * (neuron_term + module_term)
