"""Part detectors (Network Dissection; docs/design.md §1.4): which units segment which object part.

Bau, Zhou, Khosla, Oliva & Torralba, "Network Dissection: Quantifying Interpretability of Deep
Visual Representations", CVPR 2017, applied to the part masks of data sets that have them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_CHUNK_ELEMENTS = 1 << 24  # upsampled activations held at once (64 MiB in float32)


@dataclass
class PartDetectors:
    """Result of `part_detectors` for C units and P part types."""

    iou: Tensor  # (C, P) float32 data-set-wide IoU of each unit's mask with each part
    best_iou: Tensor  # (C,) float32
    best_part: Tensor  # (C,) int64 index of the best part
    is_detector: Tensor  # (C,) bool, best_iou > iou_threshold
    thresholds: Tensor  # (C,) float32 per-unit activation threshold T_c

    @property
    def count(self) -> int:
        """Number of detector units."""
        return int(self.is_detector.sum())

    @property
    def unique_parts(self) -> int:
        """Number of distinct parts that have at least one detector."""
        return int(self.best_part[self.is_detector].unique().numel())


def _upsampler(n: int, size: int) -> Tensor:
    """(n, size) matrix of 1-D linear interpolation (align_corners=False): bilinear
    upsampling of a map A (.., h, w) is `U_h.T @ A @ U_w`, the same as `F.interpolate`."""
    eye = torch.eye(n)[None]  # (1, n, n): n signals of length n
    return F.interpolate(eye, size=size, mode="linear", align_corners=False)[0]


def unit_thresholds(acts: Tensor, quantile: float = 0.005) -> Tensor:
    """Per-unit T_c with P(a_c > T_c) = quantile over all positions of all images (NetDissect).

    Args:
        acts: (N, C, h, w) activations.
        quantile: top fraction. Default 0.005 (the top 0.5%).
    Returns:
        (C,) float32: the smallest of the top ceil(quantile * N h w) values of each unit.
    """
    values = acts.float().transpose(0, 1).reshape(acts.shape[1], -1)  # (C, N h w)
    k = max(1, math.ceil(quantile * values.shape[1]))
    return values.topk(k, dim=1).values[:, -1]


def part_detectors(
    acts: Tensor,
    part_masks: Tensor,
    quantile: float = 0.005,
    iou_threshold: float = 0.04,
) -> PartDetectors:
    """Network Dissection of units against part masks (Bau et al., CVPR 2017).

    Each unit's maps are thresholded at its `unit_thresholds` T_c after bilinear upsampling to
    the mask size; IoU_{c,p} = sum_n |M_c(n) ∩ L_p(n)| / sum_n |M_c(n) ∪ L_p(n)| over the
    whole data set. A unit is a detector of its best part when that IoU exceeds
    `iou_threshold`. A unit whose threshold equals its minimum (e.g. dead: T_c = 0 = min)
    keeps only the positions strictly above it, so it never "segments" everything.

    Args:
        acts: (N, C, h, w) activations.
        part_masks: (N, P, H, W) bool, one mask per part type (empty where absent).
        quantile: top activation fraction defining T_c. Default 0.005.
        iou_threshold: detector threshold. Default 0.04.
    Returns:
        `PartDetectors` with per-unit best IoU and part, detector flags, `count` and
        `unique_parts`.
    """
    c = acts.shape[1]
    size = tuple(part_masks.shape[-2:])
    a = acts.float()
    thr = unit_thresholds(a, quantile)  # (C,)
    floor = a.transpose(0, 1).reshape(c, -1).amin(1)  # (C,)
    # strictly above T_c where T_c is the unit's minimum: nextafter turns >= into >
    thr_eff = torch.where(thr <= floor, torch.nextafter(thr, torch.tensor(math.inf)), thr)
    # A bilinear upsample never exceeds its map's maximum, so only the (image, unit) maps
    # whose peak reaches T_c can have a non-empty mask: upsample just those.
    hot = a.flatten(2).amax(-1) >= thr_eff  # (N, C)
    up_h, up_w = _upsampler(a.shape[2], size[0]), _upsampler(a.shape[3], size[1])
    labels = part_masks.flatten(2).transpose(1, 2)  # (N, HW, P) bool
    inter = torch.zeros(c, labels.shape[2], dtype=torch.float64)
    unit_area = torch.zeros(c, dtype=torch.float64)
    step = max(1, _CHUNK_ELEMENTS // (c * size[0] * size[1]))
    for start in range(0, a.shape[0], step):
        img, unit = hot[start : start + step].nonzero(as_tuple=True)  # (S,) each
        if img.numel() == 0:
            continue
        maps = up_h.T @ a[start + img, unit] @ up_w  # (S, H, W) bilinear, as F.interpolate
        m = (maps >= thr_eff[unit, None, None]).flatten(1).float()  # (S, HW)
        lab = labels[start : start + step].float()  # (n, HW, P)
        hits = torch.empty(m.shape[0], lab.shape[2])  # (S, P)
        bounds = torch.searchsorted(img, torch.arange(lab.shape[0] + 1)).tolist()
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):  # img is sorted
            if hi > lo:
                hits[lo:hi] = m[lo:hi] @ lab[i]
        inter.index_add_(0, unit, hits.double())
        unit_area.index_add_(0, unit, m.sum(1).double())
    part_area = labels.sum((0, 1), dtype=torch.float64)  # (P,)
    union = unit_area[:, None] + part_area[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter)).float()
    best_iou, best_part = iou.max(1)
    return PartDetectors(iou, best_iou, best_part, best_iou > iou_threshold, thr)
