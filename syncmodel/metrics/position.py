"""Position information (docs/design.md §1.4): does a neuron's focus tell *where* something is?

A point-like map is only informative if the point moves with the image: a neuron that fires at
one fixed pixel on every image is perfectly focused and says nothing about position.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from syncmodel.metrics.focus import spatial_entropy

_CHUNK = 256  # images per chunk: bounds the (chunk, C, HW) distributions held at once


def position_information(acts: Tensor) -> Tensor:
    """Normalised generalised Jensen–Shannon divergence of each neuron's maps across images.

    Each live map i (total mass > the focus metrics' floor) is a distribution `q_i` over the
    H W positions (`A / sum A`, negatives clamped to 0). With equal weights over a neuron's
    live maps, `JSD = H(mean_i q_i) - mean_i H(q_i)` (Lin, "Divergence measures based on the
    Shannon entropy", IEEE Trans. Inf. Theory 1991), i.e. the mutual information between the
    position drawn from a map and which image the map came from. Divided by `log(H W)`:
    in [0, 1]; 1 for one-pixel maps that land on each pixel equally often, 0 for a neuron
    whose maps are all the same (one fixed pixel, or uniform maps, or one live map).
    Rewards maps that are both point-like (low `mean H(q_i)`) and moving (high `H(mean q)`).

    Args:
        acts: (N, C, H, W) activations.
    Returns:
        (C,) float32 in [0, 1]; NaN for a neuron with no live map; 0 on 1×1 maps.
    """
    n, c, h, w = acts.shape
    total = torch.zeros(c, h * w, dtype=torch.float64)
    ent = torch.zeros(c, dtype=torch.float64)
    live_count = torch.zeros(c, dtype=torch.float64)
    for start in range(0, n, _CHUNK):
        a = acts[start : start + _CHUNK].float().clamp_min(0).flatten(2)  # (B, C, HW)
        e = spatial_entropy(acts[start : start + _CHUNK])  # (B, C), NaN for dead maps
        live = ~e.isnan()
        q = a / a.sum(-1, keepdim=True).clamp_min(1e-30)
        total += (q * live[..., None]).sum(0).double()
        ent += e.nan_to_num(0.0).sum(0).double()
        live_count += live.sum(0).double()
    if h * w == 1:
        return torch.where(live_count > 0, 0.0, float("nan")).float()
    mean_q = total / live_count.clamp_min(1)[:, None]  # (C, HW)
    h_mean = -(mean_q * mean_q.clamp_min(1e-30).log()).sum(1) / math.log(h * w)
    jsd = (h_mean - ent / live_count.clamp_min(1)).clamp(0, 1)
    return torch.where(live_count > 0, jsd, float("nan")).float()
