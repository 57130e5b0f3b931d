"""Distributedness (docs/design.md §1.4): how many distinct neurons a layer effectively has.

A layer whose neurons are copies of one detector carries one neuron's worth of responses, however
many channels it has; interpretability credited per neuron must be discounted by that.
"""

from __future__ import annotations

import torch
from torch import Tensor


def effective_neurons(responses: Tensor, min_std: float = 1e-6) -> float:
    """Participation ratio of the response correlation matrix: `PR = (sum λ)^2 / sum λ^2`.

    λ are the eigenvalues of the (C, C) correlation matrix R of the neurons' responses over
    the images (Gao, Trautmann, Yu et al., "A theory of multineuronal dimensionality, dynamics
    and measurement", bioRxiv 2017; Litwin-Kumar et al., Neuron 2017, use the same ratio on
    the covariance). We take the correlation (the covariance of standardised responses) so
    that each live neuron weighs the same whatever its scale, as the Sync descriptor does
    (docs/design.md §1.2). Neurons that never vary (dead, constant: std <= `min_std` times the
    largest std) are left out of R, so they add nothing. `sum λ = tr R = L` (live neurons)
    and `sum λ^2 = ||R||_F^2`, so `PR = L^2 / sum_ab r_ab^2` needs no eigendecomposition.
    L identical (or sign-flipped) neurons: 1; L uncorrelated neurons: L; none live: 0.

    Args:
        responses: (N, C) per-image responses (e.g. the spatial mean of post-ReLU maps).
        min_std: relative floor below which a neuron counts as constant. Default 1e-6.
    Returns:
        PR in [0, L] (float); 0.0 with fewer than 2 images or no live neuron.
    """
    r = torch.as_tensor(responses).to(torch.float64)  # (N, C)
    if r.shape[0] < 2 or r.shape[1] == 0:
        return 0.0
    z = r - r.mean(0)
    std = z.norm(dim=0)
    live = std > min_std * float(std.max()) if float(std.max()) > 0 else std > 0
    if not live.any():
        return 0.0
    z = z[:, live] / std[live]
    corr = z.T @ z  # (L, L), unit diagonal
    return float(live.sum()) ** 2 / float((corr * corr).sum())


def distributedness(responses: Tensor, min_std: float = 1e-6) -> float:
    """`effective_neurons(responses) / C`: ~1/C for clones of one neuron, ~1 for independent ones.

    Dead and constant neurons count in C but not in the participation ratio, so a layer
    that is half dead scores at most 1/2. See `effective_neurons` for the sources.

    Args:
        responses: (N, C) per-image responses.
        min_std: as in `effective_neurons`.
    Returns:
        float in [0, 1].
    """
    c = torch.as_tensor(responses).shape[1]
    return effective_neurons(responses, min_std) / c if c else 0.0


def _standardised(responses: Tensor, min_std: float) -> tuple[Tensor, Tensor]:
    """Centred responses scaled to unit norm per neuron (N, C) float64, and which neurons are
    live (std above `min_std` times the largest)."""
    r = torch.as_tensor(responses).to(torch.float64)
    z = r - r.mean(0)
    std = z.norm(dim=0)
    top = float(std.max()) if std.numel() else 0.0
    live = std > min_std * top if top > 0 else std > 0
    return z / std.clamp_min(1e-300), live


def _module_columns(z: Tensor, live: Tensor, mods: Tensor) -> Tensor:
    """`module_responses` from the standardised responses and liveness (`_standardised`)."""
    cols = []
    for m in torch.unique(mods[mods >= 0]).tolist():
        members = live & (mods == m)
        if members.any():
            cols.append(z[:, members].mean(1))
    return torch.stack(cols, 1) if cols else z.new_zeros(z.shape[0], 0)


def module_responses(responses: Tensor, modules: Tensor, min_std: float = 1e-6) -> Tensor:
    """One column per Sync module with a live member: the mean of its live members'
    standardised responses (the Sync descriptor's standardisation, docs/design.md §1.2, so
    every member weighs the same). (N, M) float64; (N, 0) when the layer has no module."""
    z, live = _standardised(responses, min_std)
    return _module_columns(z, live, torch.as_tensor(modules).long())


def unit_responses(responses: Tensor, modules: Tensor, min_std: float = 1e-6) -> Tensor:
    """The layer's functional units: one column per Sync module, one per unsynchronised live neuron.

    An unsynchronised neuron (-1) is its own unit (its standardised response), first; then the
    modules (`module_responses`). Constant and dead neurons (std <= `min_std` times the
    largest, as in `effective_neurons`) belong to no unit.

    Args:
        responses: (N, C) per-image responses.
        modules: (C,) module ids, -1 = unsynchronised.
        min_std: relative floor below which a neuron counts as constant.
    Returns:
        (N, U) float64, U = live unsynchronised neurons + modules with a live member.
    """
    z, live = _standardised(responses, min_std)
    mods = torch.as_tensor(modules).long()
    return torch.cat([z[:, live & (mods < 0)], _module_columns(z, live, mods)], 1)


def effective_units(responses: Tensor, modules: Tensor) -> float:
    """`effective_neurons` of the layer's functional units (`unit_responses`) instead of its neurons.

    The participation ratio (Gao et al. 2017) of the units' correlation: a Sync module counts
    once however many neurons synchronised into it, so synchrony within a module is not
    counted as redundancy, while two modules (or a module and a neuron) that respond alike
    still are. k distinct modules of identical neurons: about k (k - 1 when the modules are
    the one-hot indicators of k classes, whose sum is constant); 64 clones in one module: 1.
    """
    return effective_neurons(unit_responses(responses, modules))


def module_distributedness(responses: Tensor, modules: Tensor, num_classes: int) -> float:
    """`min(1, effective_units / (K - 1))`: is the layer distributed over enough distinct units?

    The paper's claim is that modules form *while the representation stays distributed*: a
    requirement on the layer, not a quantity to maximise. The yardstick is the task's: the
    K class means of a layer span at most K - 1 centred directions, so K - 1 independent
    units are what a linear read-out of K classes can use, one class-specific unit (or
    module) per class among them (`effective_units` of K one-hot class modules is K - 1).
    Below it the layer is collapsed onto fewer directions than the task has (64 clones of one
    detector: 1/(K - 1); one giant module: the same); beyond it, extra independent units —
    which independent noise also supplies — earn nothing. Unlike `distributedness` (= PR of
    the neurons / C), k synchronised modules of C/k neurons score as k distinct neurons do,
    not k/C. max(K - 1, 1) for a one-class task.

    Args:
        responses: (N, C) per-image responses.
        modules: (C,) module ids of the same neurons (-1 = unsynchronised).
        num_classes: K.
    Returns:
        float in [0, 1].
    """
    return min(1.0, effective_units(responses, modules) / max(num_classes - 1, 1))


def between_module_distributedness(responses: Tensor, modules: Tensor, num_classes: int) -> float:
    """`min(1, PR(modules) / (K - 1))`: how distinct the layer's Sync modules are from each other.

    The second composite's distributedness (`interpretability_v2`, docs/design.md §1.4; the
    current one gates on `effective_units` instead). `module_distributedness` counts
    every unsynchronised neuron as a unit of its own, so a neuron that synchronises into a
    module it already resembled costs it a unit: the coupling, which draws most free neurons
    into modules, lowered it in every digits pair where it kept accuracy while the modules
    themselves were as distinct as before (docs/results.md §2b). Here only the modules count
    (`module_responses`: each once, whatever its size), so the one invariance the paper's
    mechanism needs holds: a neuron joining a module it responds like leaves the score
    (nearly) unchanged, as it barely moves the module's mean. The yardstick is still the
    task's K - 1 (see `module_distributedness`): one module of everything, or 64 clones in
    one module, score 1/(K - 1). A layer without any module has no functional units to be
    distributed over and scores 0, as its module term does ("no credit", like an undefined
    consistency).

    Args:
        responses: (N, C) per-image responses.
        modules: (C,) module ids of the same neurons (-1 = unsynchronised).
        num_classes: K.
    Returns:
        float in [0, 1].
    """
    return min(1.0, effective_neurons(module_responses(responses, modules)) / max(num_classes - 1, 1))
