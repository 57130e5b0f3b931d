"""Location instability (ICNN; docs/design.md §1.4): does a filter fire at the same place of the object?

Zhang, Wu & Zhu, "Interpretable Convolutional Neural Networks", CVPR 2018: per filter
and landmark, the std over images of the distance between the filter's inference position and
the landmark, divided by the image diagonal; averaged over landmarks and filters.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


def inference_positions(acts: Tensor, image_size: int | tuple[int, int]) -> Tensor:
    """Image position of each map's argmax: the centre of its receptive field, in pixels.

    A map cell (i, j) of an h×w map over an H×W image covers pixels [i H/h, (i+1) H/h); its
    centre is `(i + 0.5) H/h - 0.5` in the pixel-index convention of `Split.landmarks`
    (pixel centres at integers). For padded 'same' convolutions and pooling, the receptive
    field of a cell is centred there.

    Args:
        acts: (N, F, h, w) activations of F filters on N images.
        image_size: side H (square) or (H, W).
    Returns:
        (F, N, 2) float32 (row, col) pixels; NaN where the map never fires (max <= 0), so
        that a dead filter, whose argmax is a fixed corner, does not look perfectly stable.
    """
    n, f, h, w = acts.shape
    height, width = _size(image_size)
    flat = acts.float().flatten(2)  # (N, F, hw)
    peak, idx = flat.max(-1)  # (N, F)
    rows = (idx // w + 0.5) * (height / h) - 0.5
    cols = (idx % w + 0.5) * (width / w) - 0.5
    pos = torch.stack([rows, cols], -1).transpose(0, 1).contiguous()  # (F, N, 2)
    return pos.masked_fill((peak <= 0).T[..., None], float("nan"))


def top_images(acts: Tensor, k: int = 20) -> Tensor:
    """Each filter's k images of highest peak activation (only images where it fires).

    Which images count is our choice: the top k (default 20: enough for a std, few enough
    to stay on the filter's preferred pattern rather than on images where it barely fires).

    Args:
        acts: (N, F, h, w) activations, or (N, F) peak responses.
    Returns:
        (F, N) bool mask.
    """
    peak = acts.float().flatten(2).amax(-1) if acts.dim() == 4 else acts.float()  # (N, F)
    k = min(k, peak.shape[0])
    idx = peak.topk(k, dim=0).indices  # (k, F)
    mask = torch.zeros_like(peak, dtype=torch.bool).scatter_(0, idx, True)
    return (mask & (peak > 0)).T  # (F, N)


def location_instability(
    positions: Tensor,
    landmarks: Tensor,
    image_size: int | tuple[int, int],
    mask: Tensor | None = None,
    reduce: str = "mean",
) -> Tensor:
    """ICNN location instability (Zhang et al., CVPR 2018).

    For filter f and landmark k: `std_n(|pos[f, n] - landmark[n, k]|) / sqrt(H^2 + W^2)` over
    the images n that count (mask, finite position, landmark present; at least 2), then the
    mean over landmarks (`reduce="mean"`, ICNN's definition) or the minimum (`reduce="min"`:
    the landmark the filter is most tied to; useful when parts move independently, as in
    `shapes`). Population std. Lower is more stable; 0 when the filter is always at the same
    offset from the landmark.

    Args:
        positions: (F, N, 2) inference positions (row, col) pixels, NaN = filter silent.
        landmarks: (N, K, 2) (row, col) pixels, NaN = landmark absent.
        image_size: side H (square) or (H, W).
        mask: (F, N) bool, the images that count per filter (e.g. `top_images`); None = all.
        reduce: "mean" (default) or "min" over landmarks.
    Returns:
        (F,) float32 per filter; NaN where no landmark has 2 valid images. Average with
        `nanmean` for the layer's value.
    """
    height, width = _size(image_size)
    diag = math.hypot(height, width)
    pos = positions.float()[:, :, None, :]  # (F, N, 1, 2)
    lm = landmarks.float()[None]  # (1, N, K, 2)
    dist = ((pos - lm) ** 2).sum(-1).sqrt() / diag  # (F, N, K)
    valid = torch.isfinite(dist)
    if mask is not None:
        valid &= mask[:, :, None]
    d = torch.where(valid, dist, torch.zeros_like(dist))
    cnt = valid.sum(1)  # (F, K)
    mean = d.sum(1) / cnt.clamp_min(1)
    var = (torch.where(valid, (dist - mean[:, None]) ** 2, torch.zeros_like(dist))).sum(1)
    std = (var / cnt.clamp_min(1)).sqrt().masked_fill(cnt < 2, float("nan"))  # (F, K)
    if reduce == "mean":
        return std.nanmean(1)
    if reduce == "min":
        lowest = torch.nan_to_num(std, nan=float("inf")).amin(1)
        return lowest.masked_fill(torch.isinf(lowest), float("nan"))
    raise ValueError(f"reduce must be 'mean' or 'min', got {reduce!r}")
