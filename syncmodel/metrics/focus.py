"""Focus metrics (docs/design.md §1.4): how point-like each activation map is around its focus.

All take post-ReLU maps (B, C, H, W) and return one value per map (B, C), NaN for dead maps
(total mass <= 1e-6), so that per-neuron means can `nanmean` them away.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from syncmodel.focus import DEFAULT_MIN_MASS, coordinate_grid, focus_positions, spatial_spread

__all__ = ["spatial_spread", "spatial_entropy", "peak_mass"]


def _live(a: Tensor) -> Tensor:
    return a.flatten(2).sum(-1) > DEFAULT_MIN_MASS  # (B, C)


def spatial_entropy(acts: Tensor) -> Tensor:
    """Normalised spatial entropy of each map seen as a distribution over positions.

    `H = -sum_p q_p log q_p / log(H W)` with `q = A / sum A` (negatives clamped to 0): 0 for a
    one-pixel map, 1 for a uniform one; 0 on 1×1 maps. Our measure for the focus aspect of
    docs/design.md §1.4: unlike `spatial_spread` it needs no focus position and ignores map size.

    Args:
        acts: (B, C, H, W) activations.
    Returns:
        (B, C) float32 in [0, 1], NaN for dead maps.
    """
    a = acts.float().clamp_min(0).flatten(2)  # (B, C, HW)
    n = a.shape[-1]
    q = a / a.sum(-1, keepdim=True).clamp_min(1e-30)
    ent = -(q * torch.log(q.clamp_min(1e-30))).sum(-1)  # (B, C)
    ent = ent / math.log(n) if n > 1 else torch.zeros_like(ent)
    return ent.clamp(0, 1).masked_fill(~_live(a), float("nan"))


def peak_mass(acts: Tensor, radius: float = 0.25, focus: str = "argmax") -> Tensor:
    """Fraction of each map's mass within `radius` of its focus.

    Coordinates are normalised to [-1, 1] (as in `spatial_spread`, docs/design.md §1.1), so the
    default radius 0.25 is one eighth of the map side. 1 for a one-pixel map.

    Args:
        acts: (B, C, H, W) activations (negatives clamped to 0).
        radius: Euclidean radius in normalised coordinates. Default 0.25.
        focus: "argmax" (default) or "centroid", as `syncmodel.focus.focus_positions`.
    Returns:
        (B, C) float32 in [0, 1], NaN for dead maps.
    """
    a = acts.float().clamp_min(0)
    b, c, h, w = a.shape
    ys, xs = coordinate_grid(h, w, a.device, a.dtype)
    flat = a.flatten(2)  # (B, C, HW)
    if focus == "argmax":
        # which positions lie within the radius of each possible argmax: an (HW, HW) table
        py, px = ys.repeat_interleave(w), xs.repeat(h)  # (HW,) each
        near = ((py[:, None] - py) ** 2 + (px[:, None] - px) ** 2) <= radius**2 + 1e-9
        inside = (flat * near[flat.argmax(-1)]).sum(-1)  # (B, C)
    else:
        mu = focus_positions(a, focus)  # (B, C, 2)
        d2 = (ys[:, None] - mu[..., 0, None, None]) ** 2 + (xs - mu[..., 1, None, None]) ** 2
        inside = (a * (d2 <= radius**2 + 1e-9)).flatten(2).sum(-1)  # (B, C)
    mass = a.flatten(2).sum(-1)
    return (inside / mass.clamp_min(1e-30)).masked_fill(~_live(a), float("nan"))
