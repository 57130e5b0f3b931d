"""Semantic metrics (docs/design.md §1.4): how class-specific each neuron's response is.

Responses are per-image neuron responses (N, C), e.g. the spatial mean of post-ReLU maps;
both scores are 0 for dead or constant neurons.
"""

from __future__ import annotations

import torch
from torch import Tensor


def class_means(responses: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    """Class-conditional mean response: (K, C) float64; 0 for classes with no image."""
    r = torch.as_tensor(responses).to(torch.float64)  # (N, C)
    y = torch.as_tensor(labels).long()
    k = int(y.max()) + 1 if num_classes is None else num_classes
    onehot = torch.nn.functional.one_hot(y, k).to(r.dtype)  # (N, K)
    return (onehot.T @ r) / onehot.sum(0).clamp_min(1)[:, None]


def class_selectivity(responses: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    """Class selectivity index (Morcos, Barrett, Rabinowitz & Botvinick, ICLR 2018).

    `SI = (mu_max - mu_-max) / (mu_max + mu_-max)`: mu_max the largest class-conditional mean
    response, mu_-max the mean of the other classes' means. 1 for a neuron that responds to
    one class only, 0 for one that responds equally to all; 0 for dead neurons.

    Args:
        responses: (N, C) non-negative responses (post-ReLU).
        labels: (N,) int class of each image.
        num_classes: K; default labels.max() + 1.
    Returns:
        (C,) float32 in [0, 1].
    """
    mu = class_means(responses, labels, num_classes)  # (K, C)
    k = mu.shape[0]
    top = mu.max(0).values  # (C,)
    rest = (mu.sum(0) - top) / max(k - 1, 1)
    denom = top + rest
    si = torch.where(denom > 0, (top - rest) / denom.clamp_min(1e-30), torch.zeros_like(top))
    return si.clamp(0, 1).float()


def mis(
    responses: Tensor, labels: Tensor, num_classes: int | None = None, bins: int = 16
) -> tuple[Tensor, Tensor]:
    """Mutual-information score per neuron (Liang et al., "Training Interpretable Convolutional
    Neural Networks by Differentiating Class-specific Filters", ECCV 2020).

    `MIS_c = max_k MI(a_c; 1[y = k])`, the layer's MIS being the mean over neurons. MI is the
    plug-in estimate (nats) on `bins` per-neuron quantile bins of the response (ties share a
    bin, so a dead or constant neuron has MI 0). Bounded by the class-indicator entropy
    (ln 2 for two balanced outcomes; 0.56 nats for 4 balanced classes).

    Args:
        responses: (N, C) responses.
        labels: (N,) int class of each image.
        num_classes: K; default labels.max() + 1.
        bins: quantile bins per neuron. Default 16.
    Returns:
        mis (C,) float32 nats, and the class attaining it (C,) int64.
    """
    r = torch.as_tensor(responses).float()  # (N, C)
    y = torch.as_tensor(labels).long()
    n, c = r.shape
    k = int(y.max()) + 1 if num_classes is None else num_classes
    qs = torch.linspace(0, 1, bins + 1)[1:-1]
    edges = torch.quantile(r, qs, dim=0).T.contiguous()  # (C, bins-1)
    b = torch.searchsorted(edges, r.T.contiguous(), right=True)  # (C, N) bin per image
    joint = torch.zeros(c, bins, k, dtype=torch.float64)
    joint.view(c, -1).scatter_add_(1, b * k + y[None, :], torch.ones(c, n, dtype=torch.float64))
    joint /= n  # (C, bins, K): P(bin, y)
    p_bin = joint.sum(2)  # (C, bins)
    p_cls = joint.sum((0, 1)) / c  # (K,)
    # 2×bins table per class k: (bin, y = k) and (bin, y != k)
    pos = joint  # (C, bins, K)
    neg = p_bin[:, :, None] - joint
    total = torch.zeros(c, k, dtype=torch.float64)
    for p_xy, p_y in ((pos, p_cls), (neg, 1 - p_cls)):
        ratio = p_xy / (p_bin[:, :, None] * p_y[None, None, :]).clamp_min(1e-30)
        total += torch.where(p_xy > 0, p_xy * ratio.clamp_min(1e-30).log(), 0.0).sum(1)
    best, cls = total.clamp_min(0).max(1)
    return best.float(), cls
