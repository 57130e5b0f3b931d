"""Functional modules (docs/design.md §1.3): Sync clustering of neurons by their response descriptors.

Neurons whose descriptors synchronise under the Kuramoto-style Sync dynamics collapse onto one
point and form a module; neurons that stay alone are unsynchronised (label -1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

ORDER_TARGET = 1.0 - 1e-3  # stop once the local order parameter reaches this (Böhm et al. 2010)


def response_descriptors(responses: Tensor) -> Tensor:
    """Response-profile descriptor of each neuron: the coupling's "response" kind (docs/design.md §1.2).

    Delegates to `syncmodel.sync.descriptors`, so modules are found on exactly the descriptor
    the coupling synchronises.

    Args:
        responses: (N, C) spatial-mean activation of C neurons on N images.
    Returns:
        (C, N) float64: each neuron's profile over the images, centred and scaled to unit
        norm. Neurons (nearly) constant over the images, dead ones included, get a zero row.
        Distances depend on correlation alone: `|v_a - v_b| = sqrt(2 - 2 corr(a, b))`.
    """
    from syncmodel.sync import descriptors

    r = torch.as_tensor(responses).to(torch.float64)  # (N, C)
    return descriptors(r[:, :, None, None], kind="response").nan_to_num(0.0)  # (C, N)


def _pairwise(x: Tensor) -> Tensor:
    # float64 Gram form: identical rows come out ~1e-8 apart, far below the collapse tolerance
    sq = (x * x).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * x @ x.T).clamp_min(0.0).sqrt()  # (C, C)


def order_parameter(dist: Tensor, epsilon: float) -> float:
    """Local order parameter `r = 1/n sum_x 1/|N(x)| sum_{y in N(x)} exp(-|y - x|)`.

    `N(x)` is the epsilon-ball around x, x included (Böhm, Plant & Shao, KDD 2010), so an
    isolated point counts as synchronised and r = 1 exactly when every ball has collapsed.
    """
    adj = dist <= epsilon  # (C, C)
    r = (torch.exp(-dist) * adj).sum(1) / adj.sum(1)
    return float(r.mean())


def _components(close: Tensor) -> Tensor:
    """Connected-component id per node of a symmetric boolean graph (C, C): smallest member."""
    comp = torch.arange(close.shape[0])
    big = close.shape[0]
    while True:
        # each node takes the smallest id among its neighbours (close includes itself)
        new = torch.where(close, comp[None, :], big).amin(1)
        if torch.equal(new, comp):
            return comp
        comp = new


def _labels_from_components(comp: Tensor) -> Tensor:
    """Module ids 0..M-1 by decreasing size (ties: first member), singletons -1."""
    ids, counts = torch.unique(comp, return_counts=True)
    order = sorted(
        (int(i) for i, n in zip(ids, counts) if n > 1), key=lambda i: (-int((comp == i).sum()), i)
    )
    labels = torch.full_like(comp, -1)
    for new, old in enumerate(order):
        labels[comp == old] = new
    return labels


def sync_clusters(
    descriptors: Tensor,
    epsilon: float,
    max_steps: int = 100,
    mdl: bool = False,
    tol: float | None = None,
) -> tuple[Tensor, int]:
    """Sync clustering (Böhm, Plant & Shao, "Clustering by synchronization", KDD 2010).

    Each point interacts with its epsilon-neighbourhood (itself included):
    `x_d += 1/|N(x)| * sum_{y in N(x)} sin(y_d - x_d)`, computed as two matmuls with
    `sin(y - x) = sin y cos x - cos y sin x`, so a step costs O(C^2 D) and never a C×C×D tensor.
    It stops when the local order parameter reaches 1 - 1e-3 or after `max_steps`. Points
    that end within `tol` of each other (transitively) form a module.

    Args:
        descriptors: (C, D) one row per neuron (e.g. `response_descriptors(...)`).
        epsilon: interaction radius (Euclidean). Ignored when `mdl` is True.
        max_steps: cap on interaction steps. Default 100 (unit-norm descriptors usually
            synchronise in under 20).
        mdl: choose epsilon by minimum description length instead (`mdl_epsilon`).
        tol: collapse tolerance; default epsilon / 4. After convergence synchronised points
            are ~1e-3 apart and unsynchronised ones more than epsilon apart.
    Returns:
        labels (C,) int64, modules numbered 0.. by decreasing size, -1 for singletons;
        steps: number of interaction steps taken.
    """
    if mdl:
        epsilon = mdl_epsilon(descriptors, max_steps=max_steps)
    x = torch.as_tensor(descriptors).to(torch.float64).clone()  # (C, D)
    if x.dim() != 2:
        raise ValueError(f"expected descriptors (C, D), got shape {tuple(x.shape)}")
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    tol = epsilon / 4 if tol is None else tol
    steps = 0
    while True:
        dist = _pairwise(x)  # (C, C)
        if steps >= max_steps or order_parameter(dist, epsilon) >= ORDER_TARGET:
            break
        w = (dist <= epsilon).to(x.dtype)
        w = w / w.sum(1, keepdim=True)  # (C, C) row-normalised neighbourhoods
        s, c = torch.sin(x), torch.cos(x)
        x = x + (w @ s) * c - (w @ c) * s  # (C, D)
        steps += 1
    return _labels_from_components(_components(dist <= tol)), steps


def description_length(
    descriptors: Tensor, labels: Tensor, precision: float | None = None
) -> float:
    """Bits to code the descriptors given a partition (simplified Sync MDL, Böhm et al. 2010).

    L = L(model) + L(data | model):
      - model: each point's group id (C times the entropy of the group sizes, the singletons
        counting as one "noise" group) + (D/2) log2 C bits per module centre;
      - data: every coordinate coded under an isotropic Gaussian: module members around
        their module mean with the module's variance, singletons around the noise group's
        mean with its variance; variances floored at `precision`^2 (default 1e-3 / sqrt(D),
        i.e. 0.1% of a unit-norm coordinate). The quantisation term `-log2 precision` per
        value is the same for every partition and left out.
    Simplification of Sync's MDL (which codes per-dimension Gaussians and a uniform noise
    model): one variance per group. With unit-norm descriptors a pair is worth a module when
    its distance is below about 0.5 (for C ~ 256), the natural scale of epsilon.
    """
    x = torch.as_tensor(descriptors).to(torch.float64)  # (C, D)
    n, d = x.shape
    precision = 1e-3 / math.sqrt(d) if precision is None else precision
    floor = precision**2
    groups = [labels == m for m in range(int(labels.max()) + 1)] if labels.max() >= 0 else []
    noise = labels < 0
    sizes = np.array([int(g.sum()) for g in groups] + ([int(noise.sum())] if noise.any() else []))
    p = sizes / n
    bits = float(-(sizes * np.log2(p)).sum()) + len(groups) * d / 2 * math.log2(max(n, 2))

    def gaussian_bits(pts: Tensor, lone_var: float) -> float:
        resid = (pts - pts.mean(0)) ** 2
        var = max(float(resid.mean()), floor) if len(pts) > 1 else lone_var
        return pts.numel() / 2 * math.log2(2 * math.pi * var) + float(resid.sum()) / (
            2 * var * math.log(2)
        )

    for g in groups:
        bits += gaussian_bits(x[g], floor)
    if noise.any():  # a lone noise point is coded under the spread of all points
        bits += gaussian_bits(x[noise], max(float(((x - x.mean(0)) ** 2).mean()), floor))
    return bits


def mdl_epsilon(
    descriptors: Tensor, candidates: list[float] | None = None, max_steps: int = 100
) -> float:
    """Epsilon whose Sync partition has the shortest `description_length` (Sync's MDL choice).

    Default candidates, as Sync suggests, are the mean k-nearest-neighbour distances for
    k = 1, 2, 4, 8, 16, 32 (those below C). One Sync run per candidate.
    """
    x = torch.as_tensor(descriptors).to(torch.float64)
    if candidates is None:
        dist = _pairwise(x)
        dist.fill_diagonal_(float("inf"))
        sorted_d = dist.sort(1).values  # (C, C), column k-1 = k-th neighbour
        ks = [k for k in (1, 2, 4, 8, 16, 32) if k < x.shape[0]]
        candidates = sorted({float(sorted_d[:, k - 1].mean()) for k in ks})
        candidates = [c for c in candidates if c > 0] or [1.0]
    best, best_bits = candidates[0], float("inf")
    for eps in candidates:
        labels, _ = sync_clusters(x, eps, max_steps=max_steps)
        bits = description_length(x, labels)
        if bits < best_bits:
            best, best_bits = eps, bits
    return best


def find_modules(
    responses: Tensor, epsilon: float, max_steps: int = 100, mdl: bool = False
) -> tuple[Tensor, int, float]:
    """Modules of a layer from its responses (N, C): `response_descriptors` → `sync_clusters`.

    Constant neurons (dead, or the same response on every image) have no profile to
    synchronise; they are left out and labelled -1, so that dead neurons never form a module.
    Returns labels (C,) int64, the number of Sync steps and the epsilon used (the MDL choice
    when `mdl`).
    """
    v = response_descriptors(responses)  # (C, N)
    live = v.abs().sum(1) > 0
    labels = torch.full((v.shape[0],), -1, dtype=torch.int64)
    if int(live.sum()) < 2:
        return labels, 0, epsilon
    if mdl:
        epsilon = mdl_epsilon(v[live], max_steps=max_steps)
    sub, steps = sync_clusters(v[live], epsilon, max_steps=max_steps)
    labels[live] = sub
    return labels, steps, epsilon
