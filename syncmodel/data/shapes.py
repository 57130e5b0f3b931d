"""`shapes`: generated objects of rigidly laid-out parts, with part masks and landmarks (docs/design.md §2).

Ground truth for location instability (ICNN) and part IoU (Network Dissection). Each class is
an object of three parts whose relative offsets are fixed (`LAYOUTS`, in units of the part
spacing) up to a small jitter (`JITTER` pixels per coordinate at 32 px), a global scale (the
part radius, which sets the spacing) and a translation — as in real objects, whose parts keep
a layout. Every part type belongs to at least two classes, so no part names a class alone: the
class is the set of parts *and* their layout.

`shapes-hard` (same objects) adds a distractor — one extra part of a random type at a random
free place, drawn but not annotated (it belongs to no object) — hides one of the object's
parts with probability `HARD_DROP` (its landmark NaN, its mask empty) and doubles the pixel
noise, so that part presence alone no longer tells the classes apart.

Default 64×64 images: simple_cnn's regularised `block3` map is then 16×16 (two 2× pools).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

from syncmodel.config import TrainConfig
from syncmodel.data import DataBundle, Split
from syncmodel.data.splits import make_bundle
from syncmodel.errors import ConfigError

# The generator's version, recorded with every result row (syncmodel.provenance): raise it with
# any change that alters the images, labels, landmarks or masks drawn for a seed. 2: the rigid
# three-part layouts since commit ae763a3 (1: the generator before that commit).
GENERATOR_VERSION = 2

PART_NAMES = ["disk", "square", "triangle", "bar", "cross"]
# class -> its three part types; disk and cross sit in three classes, the others in two.
CLASS_PARTS = [(0, 1, 3), (1, 2, 4), (2, 0, 4), (3, 4, 0)]
# class -> (dy, dx) of each of its parts from the object centre, in units of the spacing
# (2 R + gap); any two parts are >= 1 unit apart in L∞, so their boxes never overlap.
LAYOUTS = [
    ((-0.5, -1.0), (-0.5, 1.0), (0.5, 0.0)),  # V
    ((0.0, -1.0), (0.0, 1.0), (-1.0, 0.0)),  # T
    ((0.5, -1.0), (0.5, 1.0), (-0.5, 0.0)),  # inverted V
    ((-1.0, 0.0), (0.0, 0.0), (1.0, 0.0)),  # vertical line
]
CLASS_NAMES = ["+".join(PART_NAMES[p] for p in parts) for parts in CLASS_PARTS]

DEFAULT_SIZE = 64
DEFAULT_TRAIN = 4000
N_TEST = 1000
# Images come from a fixed data seed, never config.seed: every training seed sees the same
# train, val and test images. Each split has its own stream, and each chunk of CHUNK images
# its own generator, so a smaller n_train gives a prefix of a larger one.
DATA_SEED = 0
CHUNK = 1000
_STREAM = {"train": 0, "val": 1, "test": 2}

# geometry, in pixels at 32×32 (scaled with the image side)
R_MIN, R_MAX = 2.5, 4.0  # part "radius" (half its box side), one per object: the object's scale
GAP = 1.5  # spacing = 2 R + GAP: boxes of neighbouring parts at least GAP - 2 JITTER apart
JITTER = 0.5  # each part's centre moves by at most this per coordinate (uniform)
THIN = 0.35  # bar / cross arm half-thickness, as a fraction of the radius
BG_MAX, NOISE = 0.3, 0.08  # background level U(0, BG_MAX); pixel noise std
INK_MIN, INK_MAX = 0.55, 1.0  # part brightness
HARD_DROP = 0.3  # shapes-hard: probability that one of the object's parts is hidden
N_SLOTS = 3

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


def _layout(
    rng: np.random.Generator, labels: np.ndarray, size: int, scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Part radius (n,), spacing (n,) and centres (n, 3, 2) [slot, (row, col)] of the objects."""
    n = len(labels)
    r = rng.uniform(R_MIN, R_MAX, size=n) * scale
    spacing = 2 * r + GAP * scale
    offsets = np.asarray(LAYOUTS, dtype=np.float64)[labels] * spacing[:, None, None]  # (n, 3, 2)
    lo = -offsets.min(1) + r[:, None]  # (n, 2): room the object needs around its centre
    hi = size - 1 - offsets.max(1) - r[:, None]
    centre = lo + (hi - lo - 2 * JITTER * scale) * rng.random((n, 2)) + JITTER * scale
    jitter = rng.uniform(-JITTER, JITTER, size=(n, N_SLOTS, 2)) * scale
    return r, spacing, centre[:, None, :] + offsets + jitter


def _distractor_centres(
    rng: np.random.Generator, centres: np.ndarray, r: np.ndarray, size: int, gap: float
) -> np.ndarray:
    """A free place (n, 2) per image for one extra part: its box `gap` away from every part's."""
    n = len(r)
    out = np.zeros((n, 2))
    todo = np.arange(n)
    for _ in range(200):  # rejection; a few images with no room keep the last draw (rare)
        cand = rng.uniform(r[todo, None], size - 1 - r[todo, None], size=(len(todo), 2))
        sep = np.abs(cand[:, None, :] - centres[todo]).max(-1)  # (m, 3) L∞
        ok = (sep >= 2 * r[todo, None] + gap).all(1)
        out[todo] = cand
        todo = todo[~ok]
        if not len(todo):
            break
    return out


def draw_shapes(n: int, size: int, rng: np.random.Generator, hard: bool = False) -> dict[str, np.ndarray]:
    """n images (n, 1, S, S) in [0, 1], labels (n,), landmarks (n, P, 2), part masks (n, P, S, S).

    Landmarks are the centroids of the drawn part masks (row, col); NaN for absent part types.
    Also returns the placement `centres` (n, 3, 2) and `spacing` (n,) (for tests; not in Split).
    """
    scale = size / 32
    labels = rng.permutation(np.arange(n) % len(CLASS_PARTS))  # balanced classes
    kinds = np.asarray(CLASS_PARTS)[labels]  # (n, 3)
    r, spacing, centres = _layout(rng, labels, size, scale)
    turn = rng.random((n, N_SLOTS + 1)) < 0.5
    ink = rng.uniform(INK_MIN, INK_MAX, size=(n, N_SLOTS + 1))
    shown = np.ones((n, N_SLOTS), dtype=bool)
    noise = NOISE * (2 if hard else 1)
    if hard:
        drop = rng.random(n) < HARD_DROP
        shown[np.flatnonzero(drop), rng.integers(0, N_SLOTS, size=int(drop.sum()))] = False
        extra_kind = rng.integers(0, len(PART_NAMES), size=n)
        extra = _distractor_centres(rng, centres, r, size, GAP * scale)

    grid = np.arange(size, dtype=np.float64)
    masks = np.zeros((n, len(PART_NAMES), size, size), dtype=bool)
    images = rng.uniform(0, BG_MAX, size=(n, 1, 1))  # (n, 1, 1) background level
    images = images + rng.normal(0, noise, size=(n, size, size))  # (n, S, S)
    ink_any = np.zeros((n, size, size), dtype=bool)
    slots = [(slot, kinds[:, slot], centres[:, slot], shown[:, slot]) for slot in range(N_SLOTS)]
    if hard:
        slots.append((N_SLOTS, extra_kind, extra, np.ones(n, dtype=bool)))
    for slot, slot_kinds, slot_centres, slot_shown in slots:
        for kind in range(len(PART_NAMES)):
            sel = np.flatnonzero((slot_kinds == kind) & slot_shown)
            if len(sel) == 0:
                continue
            dy = grid[None, :, None] - slot_centres[sel, 0, None, None]  # (m, S, 1)
            dx = grid[None, None, :] - slot_centres[sel, 1, None, None]  # (m, 1, S)
            dy, dx = np.broadcast_arrays(dy, dx)  # (m, S, S)
            m = _part_mask(kind, dy, dx, r[sel, None, None], turn[sel, slot, None, None])
            if slot < N_SLOTS:  # the distractor belongs to no object: drawn, not annotated
                masks[sel, kind] = m
            ink_any[sel] |= m
            images[sel] = np.where(m, ink[sel, slot, None, None], images[sel])
    images[ink_any] += rng.normal(0, noise, size=int(ink_any.sum()))  # ink noise too

    area = masks.sum((2, 3))  # (n, P)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = (masks.sum(3) * grid).sum(2) / area  # (n, P): NaN where the part is absent
        cols = (masks.sum(2) * grid).sum(2) / area
    return {
        "images": np.clip(images, 0, 1)[:, None].astype(np.float32),
        "labels": labels.astype(np.int64),
        "landmarks": np.stack([rows, cols], -1).astype(np.float32),
        "part_masks": masks,
        "centres": centres,
        "spacing": spacing,
    }


_SPLIT_KEYS = ("images", "labels", "landmarks", "part_masks")


def generate(n: int, size: int, stream: int, hard: bool = False) -> Split:
    """n images of split `stream`, built chunk by chunk from fixed seeds (see DATA_SEED)."""
    # whole chunks, then truncate: a chunk's images must not depend on n
    chunks = [
        draw_shapes(CHUNK, size, np.random.default_rng([DATA_SEED, stream, i, int(hard)]), hard)
        for i in range(max(1, -(-n // CHUNK)))
    ]
    cat = {k: torch.from_numpy(np.concatenate([c[k] for c in chunks])[:n]) for k in _SPLIT_KEYS}
    return Split(
        cat["images"], cat["labels"], landmarks=cat["landmarks"], part_masks=cat["part_masks"]
    )


def load_shapes(config: TrainConfig, hard: bool = False) -> DataBundle:
    """One channel (shape, not colour, carries the class). `n_train` (default 4000) train
    images, val sized so that it is `val_fraction` of train + val, 1000 test images;
    `image_size` default 64. `hard`: the `shapes-hard` setting (module docstring)."""
    size = config.image_size or DEFAULT_SIZE
    if size < 32:
        raise ConfigError("image_size", f"shapes needs at least 32 pixels, got {size}")
    n_train = config.n_train or DEFAULT_TRAIN
    n_val = int(round(n_train * config.val_fraction / (1 - config.val_fraction)))
    return make_bundle(
        "shapes-hard" if hard else "shapes",
        train=generate(n_train, size, _STREAM["train"], hard),
        val=generate(n_val, size, _STREAM["val"], hard),
        test=generate(N_TEST, size, _STREAM["test"], hard),
        num_classes=len(CLASS_PARTS),
        class_names=list(CLASS_NAMES),
        part_names=list(PART_NAMES),
    )


load_shapes_hard = partial(load_shapes, hard=True)
