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


def _bins(responses: Tensor, bins: int) -> Tensor:
    """Per-neuron quantile bin of each response: (C, N) int64 (ties share a bin)."""
    r = torch.as_tensor(responses).float()  # (N, C)
    qs = torch.linspace(0, 1, bins + 1)[1:-1]
    edges = torch.quantile(r, qs, dim=0).T.contiguous()  # (C, bins-1)
    return torch.searchsorted(edges, r.T.contiguous(), right=True)  # (C, N)


def _class_mi(b: Tensor, y: Tensor, k: int, bins: int) -> Tensor:
    """Plug-in MI (nats) between bin b (C, N) and each indicator 1[y = k], for labels y
    (R, N) (R labelings at once) → (R, C, K)."""
    c, n = b.shape
    r = y.shape[0]
    joint = torch.zeros(r, c, bins * k, dtype=torch.float64)
    index = b[None] * k + y[:, None, :]  # (R, C, N)
    joint.scatter_add_(2, index, torch.ones(r, c, n, dtype=torch.float64))
    joint = joint.view(r, c, bins, k) / n  # P(bin, y)
    p_bin = joint.sum(3, keepdim=True)  # (R, C, bins, 1)
    p_cls = joint.sum(2, keepdim=True)  # (R, C, 1, K)
    total = torch.zeros(r, c, k, dtype=torch.float64)
    # 2×bins table per class k: (bin, y = k) and (bin, y != k)
    for p_xy, p_y in ((joint, p_cls), (p_bin - joint, 1 - p_cls)):
        ratio = p_xy / (p_bin * p_y).clamp_min(1e-30)
        total += torch.where(p_xy > 0, p_xy * ratio.clamp_min(1e-30).log(), 0.0).sum(2)
    return total.clamp_min(0)


def mis(
    responses: Tensor, labels: Tensor, num_classes: int | None = None, bins: int = 16
) -> tuple[Tensor, Tensor]:
    """Mutual-information score per neuron (Liang et al., "Training Interpretable Convolutional
    Neural Networks by Differentiating Class-specific Filters", ECCV 2020).

    `MIS_c = max_k MI(a_c; 1[y = k])`, the layer's MIS being the mean over neurons. MI is the
    plug-in estimate (nats) on `bins` per-neuron quantile bins of the response (ties share a
    bin, so a dead or constant neuron has MI 0). Bounded by the class-indicator entropy
    (ln 2 for two balanced outcomes; 0.56 nats for 4 balanced classes). The plug-in estimate
    is biased upward (about (bins − 1)/(2N) per indicator, more after the max over classes):
    read it against `mis_chance`.

    Args:
        responses: (N, C) responses.
        labels: (N,) int class of each image.
        num_classes: K; default labels.max() + 1.
        bins: quantile bins per neuron. Default 16.
    Returns:
        mis (C,) float32 nats, and the class attaining it (C,) int64.
    """
    y = torch.as_tensor(labels).long()
    k = int(y.max()) + 1 if num_classes is None else num_classes
    best, cls = _class_mi(_bins(responses, bins), y[None], k, bins)[0].max(1)
    return best.float(), cls


def mis_chance(
    responses: Tensor,
    labels: Tensor,
    num_classes: int | None = None,
    bins: int = 16,
    permutations: int = 20,
    seed: int = 0,
) -> Tensor:
    """Chance level of `mis`: the same estimate with the labels randomly permuted (ours).

    The mean over `permutations` seeded permutations of `mis(responses, labels[perm])`: what
    the plug-in estimate gives a neuron whose responses carry no class information, with the
    same responses, bins and class sizes. `mis − mis_chance` ("MIS above chance") is about 0
    for such a neuron and keeps the class information of a class detector.

    Args:
        responses: (N, C) responses.
        labels: (N,) int class of each image.
        num_classes: K; default labels.max() + 1.
        bins: quantile bins per neuron, as `mis`. Default 16.
        permutations: label permutations averaged. Default 20.
        seed: seed of the permutations. Default 0.
    Returns:
        (C,) float32 nats.
    """
    y = torch.as_tensor(labels).long()
    k = int(y.max()) + 1 if num_classes is None else num_classes
    g = torch.Generator().manual_seed(seed)
    b = _bins(responses, bins)  # the bins do not depend on the labels: once
    total = torch.zeros(b.shape[0], dtype=torch.float64)
    for _ in range(permutations):  # one at a time: (C, N) tables, not (R, C, N)
        perm = torch.randperm(len(y), generator=g)
        total += _class_mi(b, y[perm][None], k, bins)[0].amax(1)
    return (total / permutations).float()
