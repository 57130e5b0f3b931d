"""`shapes`: generated two-part objects with part masks and landmarks (docs/design.md §2).

Ground truth for location instability (ICNN) and part IoU (Network Dissection): each image
shows one object made of two parts; the class is the pair of part types.
"""

from __future__ import annotations

import numpy as np
import torch

from syncmodel.config import TrainConfig
from syncmodel.data import DataBundle, Split
from syncmodel.data.splits import make_bundle
from syncmodel.errors import ConfigError

PART_NAMES = ["disk", "square", "triangle", "bar", "cross"]
# class -> its two part types. disk, square and triangle are shared by two classes each;
# cross and bar belong to one class: some parts name the class alone, some only in a pair.
CLASS_PARTS = [(0, 1), (0, 2), (1, 4), (2, 3)]
CLASS_NAMES = ["+".join(PART_NAMES[p] for p in pair) for pair in CLASS_PARTS]

DEFAULT_SIZE = 32
DEFAULT_TRAIN = 4000
N_TEST = 1000
# Images come from a fixed data seed, never config.seed: every training seed sees the same
# train, val and test images. Each split has its own stream, and each chunk of CHUNK images
# its own generator, so a smaller n_train gives a prefix of a larger one.
DATA_SEED = 0
CHUNK = 1000
_STREAM = {"train": 0, "val": 1, "test": 2}

# geometry, in pixels at 32×32 (scaled with the image side)
R_MIN, R_MAX = 3.0, 6.0  # part "radius": half the side of its bounding box
GAP_MIN, GAP_MAX = 1.0, 3.0  # bounding boxes of the two parts are at least this far apart
THIN = 0.35  # bar / cross arm half-thickness, as a fraction of the radius
BG_MAX, NOISE = 0.3, 0.08  # background level U(0, BG_MAX); pixel noise std
INK_MIN, INK_MAX = 0.55, 1.0  # part brightness


def _part_mask(
    kind: int, dy: np.ndarray, dx: np.ndarray, r: np.ndarray, turn: np.ndarray
) -> np.ndarray:
    """Mask (n, S, S) of part type `kind`; dy, dx (n, S, S) offsets from the centre, r (n, 1, 1).

    Every part fits in the box |dy|, |dx| <= r, which is what keeps two parts apart.
    """
    if kind == 0:  # disk
        return dy**2 + dx**2 <= r**2
    if kind == 1:  # square
        return np.maximum(np.abs(dy), np.abs(dx)) <= 0.8 * r
    if kind == 2:  # triangle, apex up, base 2r
        return (np.abs(dy) <= r) & (np.abs(dx) <= (dy + r) / 2)
    along = np.where(turn, dy, dx)  # bar: horizontal or vertical
    across = np.where(turn, dx, dy)
    if kind == 3:
        return (np.abs(along) <= r) & (np.abs(across) <= THIN * r)
    # cross
    return ((np.abs(dy) <= r) & (np.abs(dx) <= THIN * r)) | (
        (np.abs(dx) <= r) & (np.abs(dy) <= THIN * r)
    )


def _place(rng: np.random.Generator, r: np.ndarray, size: int, gap: np.ndarray) -> np.ndarray:
    """Centres (n, 2, 2) [part, (row, col)] with both parts inside and boxes `gap` apart."""
    n = len(r)
    centres = np.zeros((n, 2, 2))
    todo = np.arange(n)
    while len(todo):  # rejection: about half the draws fit in a 32×32 frame
        ra, rb = r[todo, 0], r[todo, 1]
        a = rng.uniform(ra[:, None], size - 1 - ra[:, None], size=(len(todo), 2))  # (m, 2)
        theta = rng.uniform(0, 2 * np.pi, size=len(todo))
        step = np.stack([np.sin(theta), np.cos(theta)], 1)  # (m, 2)
        step /= np.abs(step).max(1, keepdims=True)  # unit L∞ length: box separation is exact
        b = a + (ra + rb + gap[todo])[:, None] * step
        ok = ((b >= rb[:, None]) & (b <= size - 1 - rb[:, None])).all(1)
        centres[todo[ok], 0], centres[todo[ok], 1] = a[ok], b[ok]
        todo = todo[~ok]
    return centres


def draw_shapes(n: int, size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """n images (n, 1, S, S) in [0, 1], labels (n,), landmarks (n, P, 2), part masks (n, P, S, S).

    Landmarks are the centroids of the drawn part masks (row, col); NaN for absent part types.
    """
    scale = size / 32
    labels = rng.permutation(np.arange(n) % len(CLASS_PARTS))  # balanced classes
    kinds = np.asarray(CLASS_PARTS)[labels]  # (n, 2)
    swap = rng.random(n) < 0.5  # which part is placed first does not matter, vary it anyway
    kinds[swap] = kinds[swap, ::-1]
    r = rng.uniform(R_MIN, R_MAX, size=(n, 2)) * scale
    centres = _place(rng, r, size, rng.uniform(GAP_MIN, GAP_MAX, size=n) * scale)  # (n, 2, 2)
    turn = rng.random((n, 2)) < 0.5
    ink = rng.uniform(INK_MIN, INK_MAX, size=(n, 2))

    grid = np.arange(size, dtype=np.float64)
    masks = np.zeros((n, len(PART_NAMES), size, size), dtype=bool)
    images = rng.uniform(0, BG_MAX, size=(n, 1, 1))  # (n, 1, 1) background level
    images = images + rng.normal(0, NOISE, size=(n, size, size))  # (n, S, S)
    for slot in range(2):
        for kind in range(len(PART_NAMES)):
            sel = np.flatnonzero(kinds[:, slot] == kind)
            if len(sel) == 0:
                continue
            dy = grid[None, :, None] - centres[sel, slot, 0, None, None]  # (m, S, 1)
            dx = grid[None, None, :] - centres[sel, slot, 1, None, None]  # (m, 1, S)
            dy, dx = np.broadcast_arrays(dy, dx)  # (m, S, S)
            m = _part_mask(kind, dy, dx, r[sel, slot, None, None], turn[sel, slot, None, None])
            masks[sel, kind] = m
            images[sel] = np.where(m, ink[sel, slot, None, None], images[sel])
    images[masks.any(1)] += rng.normal(0, NOISE, size=int(masks.any(1).sum()))  # ink noise too

    area = masks.sum((2, 3))  # (n, P)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = (masks.sum(3) * grid).sum(2) / area  # (n, P): NaN where the part is absent
        cols = (masks.sum(2) * grid).sum(2) / area
    return {
        "images": np.clip(images, 0, 1)[:, None].astype(np.float32),
        "labels": labels.astype(np.int64),
        "landmarks": np.stack([rows, cols], -1).astype(np.float32),
        "part_masks": masks,
    }


def generate(n: int, size: int, stream: int) -> Split:
    """n images of split `stream`, built chunk by chunk from fixed seeds (see DATA_SEED)."""
    # whole chunks, then truncate: a chunk's images must not depend on n
    chunks = [
        draw_shapes(CHUNK, size, np.random.default_rng([DATA_SEED, stream, i]))
        for i in range(max(1, -(-n // CHUNK)))
    ]
    cat = {k: torch.from_numpy(np.concatenate([c[k] for c in chunks])[:n]) for k in chunks[0]}
    return Split(
        cat["images"], cat["labels"], landmarks=cat["landmarks"], part_masks=cat["part_masks"]
    )


def load_shapes(config: TrainConfig) -> DataBundle:
    """One channel (shape, not colour, carries the class). `n_train` (default 4000) train
    images, val sized so that it is `val_fraction` of train + val, 1000 test images."""
    size = config.image_size or DEFAULT_SIZE
    if size < 16:
        raise ConfigError("image_size", f"shapes needs at least 16 pixels, got {size}")
    n_train = config.n_train or DEFAULT_TRAIN
    n_val = int(round(n_train * config.val_fraction / (1 - config.val_fraction)))
    return make_bundle(
        "shapes",
        train=generate(n_train, size, _STREAM["train"]),
        val=generate(n_val, size, _STREAM["val"]),
        test=generate(N_TEST, size, _STREAM["test"]),
        num_classes=len(CLASS_PARTS),
        class_names=list(CLASS_NAMES),
        part_names=list(PART_NAMES),
    )
