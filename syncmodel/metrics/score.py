"""The composite `interpretability` score in [0, 1], the search objective (docs/design.md §1.4),
and its earlier versions `interpretability_v2` and `interpretability_v1`, kept under those names
for the rows they scored.

A product of factors, so that a collapsed factor zeroes the score: how far the net is above
chance, whether the layer has collapsed onto about one functional unit, and an additive mix of
a neuron term (position-informative, class-specific live neurons) and a module term (covering,
consistent, held-out class-pure modules, none of which holds most of the layer). The versions
share that form and differ in how they guard against collapse: v1 counted distributedness
between neurons (so synchronisation, the paper's mechanism, counted as redundancy) and credited
raw ARI (which chance inflates for few, large modules); v2 counted distributedness between the
Sync modules against the task's K - 1 and credited consistency beyond a size-matched chance
null, but still graded working layers by how many distinct modules they had and how large
their largest module was; the current one keeps v2's chance-corrected consistency and turns
both guards into gates that are 1 for every layer that has not collapsed.
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


GIANT_MODULE = 0.5  # a module holding more than this share of the layer is a giant one


def collapse_gates(effective_units: float, largest_module: float) -> tuple[float, float]:
    """The composite's two guards against collapse, each 1 for a layer that has not collapsed.

    - `G = min(1, max(0, effective_units - 1))`: a layer whose functional units (Sync modules
      once each, and unsynchronised neurons; `syncmodel.metrics.effective_units`) are about
      one (64 clones, in one module or none; one module of everything; a dead or constant
      layer: PR 1 or 0) gets 0; from two distinct units on, 1.
    - `H = min(1, 2 * (1 - largest))`: a module holding more than half the layer is one giant
      module with stragglers; its credit falls linearly to 0 when it holds all of it.
    NaN counts as 0, as everywhere in the composite (`effective_units` NaN: G = 0;
    `largest_module` NaN: no module, H = 1, as v2's `1 - largest` read it)."""
    gate = _unit(effective_units - 1.0) if effective_units is not None else 0.0
    return gate, min(1.0, (1.0 - _unit(largest_module)) / (1.0 - GIANT_MODULE))


def interpretability(
    scores: Tensor,
    *,
    effective_units: float,
    coverage: float,
    consistency: float,
    purity: float,
    largest_module: float,
    accuracy: float | None = None,
    chance: float | None = None,
) -> float:
    """Composite `I = A * G * (mean_c s_c + coverage * Ĉ * purity * H) / 2`.

    The paper's claims, each a factor or term in [0, 1] (docs/design.md §1.4):
    - focused, part-stable, class-specific neurons: the neuron term `mean_c s_c`
      (`neuron_scores`: position information, Zhang et al. 2018's premise, times class
      selectivity, Morcos et al. 2018, gated by activity; dead neurons 0);
    - modules consistent across data and semantically specific: the module term, coverage
      times `Ĉ` (`module_consistency_corrected`: ARI of the modules of two data halves,
      Hubert & Arabie 1985, beyond the 95% point of partitions with the same module sizes)
      times held-out class purity (`heldout_specificity`) times the giant-module gate H;
    - a representation that stays distributed, not collapsed onto one unit: the collapse gate
      G on the effective number of functional units (`effective_units`: each Sync module
      once, each unsynchronised neuron once; participation ratio, Gao et al. 2017);
    - of a working classifier: `A = (acc - chance) / (1 - chance)` (`accuracy_gain`).

    `G = min(1, max(0, effective_units - 1))` and `H = min(1, 2 * (1 - largest))`
    (`collapse_gates`).

    Derivation. Collapse must not raise the score, and synchrony must not lower it. Collapse
    is a layer acting as about one unit: 64 clones, one module of everything, a dead or
    constant layer; or one module holding most of the layer. Synchrony is neurons responding
    as one *within* a module: it makes modules larger and leaves fewer free neurons, without
    making the modules alike. v1 counted redundancy between neurons, so every module the
    coupling formed cost score. v2 counted distinct modules against the task's K - 1
    (`between_module_distributedness`) and charged `1 - largest`: both graded every working
    layer, by how many distinct modules it had and by how much of it its largest module
    held, i.e. partly by how far the coupling had gathered it. Measured on two shapes
    comparisons (docs/results.md §2b), D_m ranked alone orders working nets *against* every
    primary metric, so a guard, not the claims, set much of v2's ranking. Here each guard is
    a gate, 1 for every layer that has not collapsed and falling only as it does: G is 1 from
    two distinct functional units on (a layer that tells anything apart has at least two)
    and 0 at one or none; H is 1 while every module holds at most half the layer and 0 when
    one module holds all of it (whose consistency is undefined anyway, `is_degenerate`).
    Beyond collapse, how consistent and class-specific the modules are is the module term's
    business, and the chance agreement of few, large modules is removed by `Ĉ`, not by a
    size penalty. A and G are factors, so they gate both terms; the terms are averaged so
    that a net whose modules are few or small still gets credit for its neurons.

    Args:
        scores: (C,) `neuron_scores` of all neurons of the layer (dead ones included, as 0).
        effective_units: `effective_units(responses, modules)` (>= 0).
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
    gate, giant = collapse_gates(effective_units, largest_module)
    return _composite(scores, gate, giant, coverage, consistency, purity, accuracy, chance)


def interpretability_v2(
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
    """The second composite (issue 24, until the collapse gates): `I = A * D_m * (mean_c s_c +
    coverage * Ĉ * purity * (1 - largest)) / 2`. Kept for the rows it scored.

    As the current `interpretability`, except for its two guards against collapse, both graded:
    `D_m` (`between_module_distributedness`: the effective number of distinct Sync modules
    over K - 1, capped at 1) and `1 - largest` (the largest module's share of the layer).
    D_m replaced v1's distributedness between neurons, which counted every module the
    coupling formed as redundancy (in all 12 base → +sync pairs of the baselines v1 fell with
    it while the neuron + module term rose); D_m counts each module once, so a neuron joining
    a module it resembles leaves it nearly unchanged. What it still did, measured on two
    shapes comparisons (docs/results.md §2b): ranked alone, D_m ordered the working nets
    against every primary metric (K - 1 = 3 distinct modules is a level working nets
    straddle), and `1 - largest` charged every neuron the coupling draws into a module.

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
        scores, _unit(distributedness), 1.0 - _unit(largest_module), coverage, consistency,
        purity, accuracy, chance,
    )  # fmt: skip


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
        scores, _unit(distributedness), 1.0 - _unit(largest_module), coverage, consistency,
        purity, accuracy, chance,
    )  # fmt: skip


def _composite(
    scores: Tensor,
    guard: float,
    size: float,
    coverage: float,
    consistency: float,
    purity: float,
    accuracy: float | None,
    chance: float | None,
) -> float:
    """The form every version shares, `A * guard * (mean_c s_c + coverage * consistency+ *
    purity * size) / 2`: each version passes its guard against collapse (v1, v2: the
    distributedness; the current one: G) and its module-size factor (v1, v2: 1 - largest;
    the current one: H), both already in [0, 1]."""
    gain = 1.0 if accuracy is None else accuracy_gain(accuracy, 0.0 if chance is None else chance)
    neuron_term = float(scores.float().mean()) if scores.numel() else 0.0
    module_term = _unit(coverage) * _unit(consistency) * _unit(purity) * size
    return gain * guard * 0.5 * (_unit(neuron_term) + module_term)
