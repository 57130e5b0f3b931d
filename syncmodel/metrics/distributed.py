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
