"""Location instability (ICNN; docs/design.md §1.4): does a filter fire at the same place of the object?

Zhang, Wu & Zhu, "Interpretable Convolutional Neural Networks", CVPR 2018, as its released
MATLAB code computes it (github.com/zqs1022/interpretableCNN, `code/tool/main/`):
`step_computeStability_multiClass.m` (per category, category choice, layer mean),
`getDistSqrtVar.m` (per part top-K, distance std), `computeStability.m` /
`getCNNFeature.m` (inference position and score), `x2p_.m` + `getConvNetPara.m` (map cell →
image pixel). The protocol, per category c (on c's images only):

1. each filter's inference position on an image is the argmax of its map, mapped to the
   image pixel at the centre of that cell's receptive field; its score is the map's maximum;
2. for each part p of c: among c's images where p is present, the filter's top K (= 100)
   images by score; the sample std (N−1) of the Euclidean filter-to-part distance over them;
   if fewer than 2 such images, the filter's value on c is undefined (NaN);
3. the filter's value on c is the mean over c's parts, divided by the image diagonal;
4. each filter is assigned the category on which its mean score (over c's images) is highest;
   the layer's value is the mean over the filters whose value there is defined.

Where ours must differ, and why:
- Parts of a category: ICNN passes a fixed part list per data set; ours are the landmarks
  present on at least one of the category's images (the data carry no list; a part never on
  c's images would make every filter NaN on c in ICNN's code).
- Maps: ICNN reads a conv layer's pre-ReLU output; the evaluation reads post-BN-ReLU stage
  outputs. The argmax is the same wherever the map fires; a map that never fires has score
  0 and, as in MATLAB's `max` on a constant map, position cell (0, 0).
- Cell → pixel: `x2p_` gives `centre + j·stride` with `getConvNetPara`'s receptive-field
  centre. For nets whose downsampling is 2×2/2 pooling between 3×3 'same' convs (simple_cnn,
  vgg11_bn, and ICNN's VGG nets) that is exactly `(j + 0.5)·H/h − 0.5` (0-based pixels), our
  default. For strided 3×3 convs (resnet18) `x2p_` gives `j·stride`: pass `centre=0` there;
  the evaluation uses the default, off by (stride − 1)/2 pixels for resnet18.
- Ties in the top-K sort are broken by image order, as MATLAB's stable `sort`; ties in the
  argmax by column-major order, as MATLAB's `max`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


def inference_positions(
    acts: Tensor, image_size: int | tuple[int, int], centre: float | None = None
) -> Tensor:
    """Image position of each map's argmax (ICNN `computeStability.m` + `x2p_.m`).

    Cell (i, j) of an h×w map over an H×W image maps to pixel `centre + i·H/h` (rows; cols
    alike), in the 0-based pixel convention of `Split.landmarks`. The default `centre`,
    `(H/h − 1)/2`, is `getConvNetPara`'s receptive-field centre for nets that downsample by
    2×2/2 pooling between 3×3 'same' convs; strided 3×3 convs (pad 1) give 0. Ties: the first
    maximum in column-major order, as MATLAB's `max(max(x, [], 1), [], 2)`.

    Args:
        acts: (N, F, h, w) activations of F filters on N images.
        image_size: side H (square) or (H, W).
        centre: pixel of cell 0's receptive-field centre, in units of pixels; default above
            (the same offset for rows and columns on square strides).
    Returns:
        (F, N, 2) float32 (row, col) pixels. A map that never fires sits at cell (0, 0).
    """
    n, f, h, w = acts.shape
    height, width = _size(image_size)
    # column-major flattening: argmax's first maximum is then MATLAB's
    idx = acts.float().transpose(2, 3).flatten(2).argmax(-1)  # (N, F) = col * h + row
    row, col = idx % h, idx // h
    c_row = (height / h - 1) / 2 if centre is None else centre
    c_col = (width / w - 1) / 2 if centre is None else centre
    pos = torch.stack([c_row + row * (height / h), c_col + col * (width / w)], -1)
    return pos.transpose(0, 1).contiguous().float()  # (F, N, 2)


def part_instability(
    positions: Tensor,
    scores: Tensor,
    landmarks: Tensor,
    image_size: int | tuple[int, int],
    k: int = 100,
) -> tuple[Tensor, Tensor]:
    """Per filter and part: std of the filter-to-part distance over its top-k images (ICNN).

    `getDistSqrtVar.m`: for part p, the images where p is present, sorted by the filter's
    score (descending, ties by image order), the first k; `std(|part − pos|)` with N − 1,
    divided here by the image diagonal (`computeStability.m` divides after averaging parts:
    the same number). All images given count: pass one category's images.

    Args:
        positions: (F, N, 2) inference positions (row, col) pixels.
        scores: (F, N) the filters' map maxima.
        landmarks: (N, P, 2) (row, col) pixels, NaN = part absent.
        image_size: side H (square) or (H, W).
        k: images per filter and part. Default 100 (ICNN's `patchNumPerPattern`).
    Returns:
        std (F, P) float32, NaN where the part is on fewer than 2 images; and the number of
        images with each part (P,) int64.
    """
    height, width = _size(image_size)
    diag = math.hypot(height, width)
    present = torch.isfinite(landmarks).all(-1)  # (N, P)
    f, p = positions.shape[0], landmarks.shape[1]
    std = torch.full((f, p), float("nan"))
    counts = present.sum(0)
    for part in range(p):
        imgs = torch.nonzero(present[:, part]).squeeze(1)
        if len(imgs) < 2:
            continue
        order = torch.sort(scores[:, imgs].float(), dim=1, descending=True, stable=True).indices
        top = imgs[order[:, :k]]  # (F, k')
        lm = landmarks[top, part].float()  # (F, k', 2)
        pos = torch.gather(positions.float(), 1, top[..., None].expand(-1, -1, 2))
        dist = (lm - pos).square().sum(-1).sqrt()  # (F, k')
        std[:, part] = dist.std(1, correction=1) / diag
    return std, counts


def _categories(
    positions: Tensor,
    scores: Tensor,
    landmarks: Tensor,
    labels: Tensor,
    image_size: int | tuple[int, int],
    k: int,
    images: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per category on `images` (bool (N,), None = all): ICNN value (F, K), per-part std
    (F, K, P) with NaN for parts absent from the category, and mean score (F, K)."""
    y = labels.long()
    num = int(y.max()) + 1
    f, p = positions.shape[0], landmarks.shape[1]
    value = torch.full((f, num), float("nan"))
    parts = torch.full((f, num, p), float("nan"))
    mean_score = torch.full((f, num), float("nan"))
    for c in range(num):
        sel = y == c if images is None else (y == c) & images
        idx = torch.nonzero(sel).squeeze(1)
        if len(idx) == 0:
            continue
        lm = landmarks[idx]
        std, counts = part_instability(positions[:, idx], scores[:, idx], lm, image_size, k)
        # computeStability_multiClass: images with no part at all keep score 0 yet count in
        # the mean; pos/score of such images are never computed
        valid = torch.isfinite(lm).all(-1).any(1)  # (n,)
        mean_score[:, c] = torch.where(valid, scores[:, idx].float(), 0.0).mean(1)
        of_c = counts > 0  # the category's parts
        if of_c.any():
            parts[:, c][:, of_c] = std[:, of_c]
            # getAvgDistSqrtVar: one part with < 2 images leaves the filter NaN on c
            value[:, c] = std[:, of_c].mean(1)
    return value, parts, mean_score


def _pick(table: Tensor, choice: Tensor) -> Tensor:
    """table (F, K, ...) at each filter's choice (F,) → (F, ...)."""
    return table[torch.arange(table.shape[0]), choice]


def location_instability(
    positions: Tensor,
    scores: Tensor,
    landmarks: Tensor,
    labels: Tensor,
    image_size: int | tuple[int, int],
    k: int = 100,
) -> Tensor:
    """ICNN location instability per filter (Zhang et al., CVPR 2018; protocol in the module doc).

    Per category: the mean over its parts of the part's top-k distance std / image diagonal;
    each filter takes the category of its highest mean score (first on ties). Lower is more
    stable; 0 for a filter always at the same offset from every part on its top images.

    Args:
        positions: (F, N, 2) inference positions (row, col) pixels (`inference_positions`).
        scores: (F, N) the filters' map maxima.
        landmarks: (N, P, 2) (row, col) pixels, NaN = part absent.
        labels: (N,) int category of each image.
        image_size: side H (square) or (H, W).
        k: top images per filter and part. Default 100, as ICNN.
    Returns:
        (F,) float32; NaN where undefined on the filter's category (a part of it on < 2
        images). The layer's value is the `nanmean` (ICNN drops NaN filters).
    """
    value, _, mean_score = _categories(positions, scores, landmarks, labels, image_size, k)
    return _pick(value, torch.nan_to_num(mean_score, nan=-math.inf).argmax(1)).float()


def halves(labels: Tensor, seed: int = 0) -> Tensor:
    """Two disjoint halves of the images, stratified by label: (N,) bool, True = first half.

    A seeded random order; within each label, alternate images go to either half.
    """
    y = labels.long()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    first = torch.zeros(len(y), dtype=torch.bool)
    for c in torch.unique(y):
        of_c = perm[y[perm] == c]
        first[of_c[::2]] = True
    return first


def _heldout(
    positions: Tensor,
    scores: Tensor,
    landmarks: Tensor,
    labels: Tensor,
    image_size: int | tuple[int, int],
    k: int,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Per fold (choose on one half, score on the other): the category and part chosen on
    the choice half → the ICNN value and the chosen part's std on the scoring half, (2, F) each."""
    first = halves(labels, seed)
    k_half = max(2, -(-k // 2))  # both halves together: k images, as the full protocol
    tables = [
        _categories(positions, scores, landmarks, labels, image_size, k_half, half)
        for half in (first, ~first)
    ]
    values, part_values = [], []
    for choose, score in ((0, 1), (1, 0)):
        _, parts_c, mean_c = tables[choose]
        value_s, parts_s, _ = tables[score]
        cat = torch.nan_to_num(mean_c, nan=-math.inf).argmax(1)  # (F,)
        part = torch.nan_to_num(_pick(parts_c, cat), nan=math.inf).argmin(1)  # (F,)
        values.append(_pick(value_s, cat))
        picked = _pick(_pick(parts_s, cat), part)
        # no defined part on the choice half: nothing was chosen
        none = torch.isnan(_pick(parts_c, cat)).all(1)
        part_values.append(picked.masked_fill(none, float("nan")))
    return torch.stack(values), torch.stack(part_values)


def location_instability_heldout(
    positions: Tensor,
    scores: Tensor,
    landmarks: Tensor,
    labels: Tensor,
    image_size: int | tuple[int, int],
    k: int = 100,
    seed: int = 0,
) -> Tensor:
    """ICNN location instability with the category chosen on held-out images (ours).

    `halves(labels, seed)` splits the images in two; each filter's category is chosen by
    mean score on one half and its ICNN value (mean over the category's parts) computed on
    the other, with ceil(k/2) top images per half; both directions, averaged (`nanmean`).
    No choice is scored on the images it was made on.

    Args: as `location_instability`, plus `seed` for the halves.
    Returns:
        (F,) float32; NaN where undefined in both directions.
    """
    values, _ = _heldout(positions, scores, landmarks, labels, image_size, k, seed)
    return values.nanmean(0).float()


def location_instability_part_heldout(
    positions: Tensor,
    scores: Tensor,
    landmarks: Tensor,
    labels: Tensor,
    image_size: int | tuple[int, int],
    k: int = 100,
    seed: int = 0,
) -> Tensor:
    """Instability to the filter's own part, chosen on held-out images (ours; not ICNN's).

    On one half (`halves`), the filter's category (highest mean score) and, among that
    category's parts, the part with the lowest ICNN distance std; on the other half, that
    part's std / diagonal (ceil(k/2) top images). Both directions, averaged (`nanmean`).
    Measures how tied a filter is to one part when parts move independently, without the
    downward bias of taking the minimum over parts on the images it is scored on.

    Args: as `location_instability`, plus `seed` for the halves.
    Returns:
        (F,) float32; NaN where undefined in both directions.
    """
    _, part_values = _heldout(positions, scores, landmarks, labels, image_size, k, seed)
    return part_values.nanmean(0).float()
