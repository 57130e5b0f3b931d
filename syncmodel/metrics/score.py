"""The composite `interpretability` score in [0, 1], the search objective (docs/design.md §1.4),
and its first version `interpretability_v1`, kept under that name for the rows it scored.

A product of factors, so that a collapsed factor zeroes the score: how far the net is above
chance, how distributed the layer is, and an additive mix of a neuron term
(position-informative, class-specific live neurons) and a module term (covering, consistent,
held-out class-pure modules that are not one giant module). The two versions share that form
and differ in two factors: v1 counted distributedness between neurons (so synchronisation, the
paper's mechanism, counted as redundancy) and credited raw ARI (which chance inflates for few,
large modules); the current one counts it between the Sync modules, against the task's K - 1,
and credits consistency beyond a size-matched chance null.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def neuron_scores(
    position_info: Tensor, selectivity: Tensor, active_fraction: Tensor, num_classes: int
) -> Tensor:
    """Per-neuron interpretability `s_c = g_c * sqrt(P_c * S_c)` in [0, 1].

    - position information `P_c` (`position_information`): the normalised Jensen–Shannon
      divergence of the neuron's spatial maps across images, high only for point-like maps
      whose point moves with the image (ICNN's premise that a filter marks where its part is,
      Zhang, Wu & Zhu, CVPR 2018); 0 for a neuron that fires at one fixed pixel on every image,
      for diffuse maps, and if it never fires (NaN → 0);
    - selectivity `S_c`: class selectivity index (Morcos et al., ICLR 2018), 0 for constant or
      dead neurons;
    - activity gate `g_c = min(1, K * a_c)`, a_c the fraction of images on which the neuron
      fires at all, K classes: a neuron firing on fewer images than one class's share counts
      proportionally less, a dead one not at all.
    The geometric mean needs both: a class detector with diffuse or fixed maps scores low, and
    so does a well-localised neuron that responds to every class alike.

    Args:
        position_info, selectivity, active_fraction: (C,) per neuron (NaN = never fires).
        num_classes: K.
    Returns:
        (C,) float32.
    """
    focus = torch.nan_to_num(position_info.float(), nan=0.0).clamp(0, 1)
    gate = (active_fraction.float() * num_classes).clamp(0, 1)
    return gate * (focus * selectivity.float().clamp(0, 1)).sqrt()


def _unit(v: float | None) -> float:
    """NaN / None (undefined: no module, a degenerate partition) → 0; else clipped to [0, 1]."""
    return 0.0 if v is None or math.isnan(v) else min(max(float(v), 0.0), 1.0)


def accuracy_gain(accuracy: float, chance: float) -> float:
    """`(acc - chance) / (1 - chance)` clipped to [0, 1]: 0 at or below chance, 1 when perfect."""
    return _unit((accuracy - chance) / (1.0 - chance)) if chance < 1.0 else 0.0


def interpretability(
    scores: Tensor,
    *,
    distributedness: float,
    coverage: float,
    consistency: float,
    purity: float,
    largest_module: float,
    accuracy: float | None = None,
    chance: float | None = None,
) -> float:
    """Composite `I = A * D_m * (mean_c s_c + coverage * Ĉ * purity * (1 - largest)) / 2`.

    The paper's claims, each a factor or term in [0, 1] (docs/design.md §1.4):
    - focused, part-stable, class-specific neurons: the neuron term `mean_c s_c`
      (`neuron_scores`: position information, Zhang et al. 2018's premise, times class
      selectivity, Morcos et al. 2018, gated by activity; dead neurons 0);
    - modules consistent across data and semantically specific: the module term, coverage
      times `Ĉ` (`module_consistency_corrected`: ARI of the modules of two data halves,
      Hubert & Arabie 1985, beyond the 95% point of partitions with the same module sizes)
      times held-out class purity (`heldout_specificity`) times `1 - largest` (one module of
      everything earns nothing however consistent);
    - a representation that stays distributed: `D_m` (`between_module_distributedness`): the
      effective number of distinct Sync modules (each once; participation ratio, Gao et al.
      2017) over K - 1, capped at 1; 0 for a layer without a module;
    - of a working classifier: `A = (acc - chance) / (1 - chance)` (`accuracy_gain`).

    Derivation. Collapse must not raise the score, and synchrony must not lower it. v1 used
    `D = PR(neurons) / C`: it discounts k synchronised modules of C/k identical neurons to
    k/C, exactly as it discounts k clones, so every module the coupling formed cost score
    (in all 12 base → +sync pairs of the baselines v1 fell with D while the neuron + module
    term rose). Counting redundancy between *units* (a module once) removes that: k distinct
    modules have PR k, as k distinct neurons do. Normalising by the number of units instead
    would let one giant module (1 unit, PR 1) score D = 1; normalising by C brings the
    synchrony penalty back. The remaining yardstick is the task: K classes need K - 1
    distinct directions, so D = min(1, PR / (K - 1)) — a floor that collapse
    (clones, one giant module, dead or constant layers) falls below, and beyond which more
    independent units (or independent noise) earn nothing, so D no longer dominates the
    ranking of working nets. Counting each unsynchronised neuron as a unit as well (`D_u`,
    `module_distributedness`, this composite's factor until the 16-seed digits rerun) still
    charged synchrony: a neuron drawn into a module it resembles is one unit fewer, and the
    coupling draws almost every free neuron in (digits: about 30 per net become about 2), so
    D_u fell in every coupled pair that kept accuracy while the modules alone were as distinct
    as before (docs/results.md §2b). D_m counts the modules alone, so a neuron joining a module
    it responds like leaves it nearly unchanged; a layer with no module has no functional
    units and gets 0, as its module term does. With raw `max(0, ARI)`, consistency earned
    chance credit that grows as modules get fewer and larger; `Ĉ` does not. A and D_m are
    factors, as in v1, so they gate both terms; the terms are averaged so that a net whose
    modules are few or small still gets credit for its neurons.

    Args:
        scores: (C,) `neuron_scores` of all neurons of the layer (dead ones included, as 0).
        distributedness: `between_module_distributedness(responses, modules, K)` in [0, 1].
        coverage: fraction of neurons in a module (of >= 2 neurons).
        consistency: `module_consistency_corrected(...)["corrected"]` (NaN: degenerate).
        purity: mean held-out module class purity (`heldout_specificity`, 0..1).
        largest_module: `largest_module_share(modules)`.
        accuracy, chance: the net's accuracy on the evaluated images and the chance level
            (most frequent class's share); None → A = 1 (the representation alone).
    NaN inputs count as 0.
    Returns:
        float in [0, 1].
    """
    return _composite(
        scores, distributedness, coverage, consistency, purity, largest_module, accuracy, chance
    )


def interpretability_v1(
    scores: Tensor,
    *,
    distributedness: float,
    coverage: float,
    consistency: float,
    purity: float,
    largest_module: float,
    accuracy: float | None = None,
    chance: float | None = None,
) -> float:
    """The first composite (until issue 24): `A * D * (mean_c s_c + coverage * ARI+ * purity *
    (1 - largest)) / 2` with D between neurons and raw ARI. Kept for the rows it scored.

    Its flaws, measured on the baselines (docs/design.md §1.4): log(A D) explained 92% (shapes)
    and 98.5% (digits) of the variance of its log, and D fell whenever the coupling formed
    modules, so a study maximising it drove `coupling_K` to 0.

    What it rewards, factor by factor (each in [0, 1]):
    - `A = (acc - chance) / (1 - chance)` (`accuracy_gain`; 1 when `accuracy` is None): the
      units are explained as parts of a working classifier. Explaining the units of a net
      that does not solve the task explains nothing about the task, and over-synchronised
      nets lose accuracy first (λ_focus 0.1, K 1 on digits: 0.48); without A such a net, or a
      random untrained one, can be as "selective" as a trained one. A is a factor, not a
      term, so the score never rises as a net falls towards chance.
    - `D = effective_neurons / C` (`distributedness`, the participation ratio of the response
      correlation, Gao et al. 2017): per-neuron credit counts once per *distinct* neuron. 64
      copies of one class detector are perfectly selective, focused and form one consistent,
      class-pure module; D = 1/64 is what makes them score low. Dead and constant neurons
      add nothing to D.
    - neuron term `mean_c s_c` (`neuron_scores`, dead neurons as 0): class-specific neurons
      (Morcos et al. 2018) whose maps say where something is (position information, the
      focus aspect of ICNN, Zhang et al. 2018); a fixed-pixel neuron has none.
    - module term `coverage * max(0, ARI) * purity * (1 - largest)`: Sync modules
      (docs/design.md §1.3) that cover the layer, are found again on another half of the data
      (ARI, Hubert & Arabie 1985; NaN = degenerate partition → 0), whose mean response is
      class-pure on the half they were *not* found on (`heldout_specificity`), and that are
      not one giant module (`largest` = largest module's share of the layer): one module of
      everything gets 0 however consistent and pure, as does no module at all.
    The neuron and module terms are averaged, not multiplied: a plain net has few modules
    and its neurons must still count; collapse is caught by the factors A and D, which gate
    both terms.

    Args:
        scores: (C,) `neuron_scores` of all neurons of the layer (dead ones included, as 0).
        distributedness: `distributedness(responses)` in [0, 1].
        coverage: fraction of neurons in a module (of >= 2 neurons).
        consistency: ARI between the modules found on two disjoint halves (NaN: degenerate).
        purity: mean held-out module class purity (`heldout_specificity`, 0..1).
        largest_module: `largest_module_share(modules)`.
        accuracy, chance: the net's accuracy on the evaluated images and the chance level
            (most frequent class's share); None → A = 1 (the representation alone).
    NaN inputs count as 0. Cheap: one pass of activations plus three Sync runs (whole data,
    two halves).
    Returns:
        float in [0, 1].
    """
    return _composite(
        scores, distributedness, coverage, consistency, purity, largest_module, accuracy, chance
    )


def _composite(
    scores: Tensor,
    distributedness: float,
    coverage: float,
    consistency: float,
    purity: float,
    largest_module: float,
    accuracy: float | None,
    chance: float | None,
) -> float:
    """`A * D * (mean_c s_c + coverage * consistency+ * purity * (1 - largest)) / 2`."""
    gain = 1.0 if accuracy is None else accuracy_gain(accuracy, 0.0 if chance is None else chance)
    neuron_term = float(scores.float().mean()) if scores.numel() else 0.0
    module_term = (
        _unit(coverage) * _unit(consistency) * _unit(purity) * (1.0 - _unit(largest_module))
    )
    return gain * _unit(distributedness) * 0.5 * (_unit(neuron_term) + module_term)
