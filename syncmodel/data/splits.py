"""Shared pieces of the data sets: seeded stratified splits, resizing, train-statistics normalisation.

Every loader ends in `make_bundle`, so that all data sets normalise and split the same way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split

from syncmodel.data import DataBundle, Split
from syncmodel.errors import DataError

# The test split of a finite data set is drawn with this seed, never config.seed, so that
# every run of a study is scored on the same test images.
TEST_SEED = 0


def split_indices(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) with `fraction` held out, stratified by label where possible."""
    idx = np.arange(len(labels))
    n_held = int(round(fraction * len(labels)))
    if n_held == 0:
        return np.random.default_rng(seed).permutation(idx), idx[:0]
    if n_held == len(labels):
        return idx[:0], np.random.default_rng(seed).permutation(idx)
    try:
        kept, held = train_test_split(idx, test_size=n_held, stratify=labels, random_state=seed)
    except ValueError:
        # too few images per class for stratification (tiny n_train or val_fraction)
        kept, held = train_test_split(idx, test_size=n_held, random_state=seed)
    return np.asarray(kept), np.asarray(held)


def check_sizes(name: str, n_train: int, n_val: int, n_test: int, val_fraction: float) -> None:
    """Refuse splits that training cannot use: an empty train or test split, or an empty val
    split although `val_fraction` asks for one (a tiny data set: the fraction rounds to 0)."""
    total = n_train + n_val + n_test
    if n_train == 0 or n_test == 0:
        empty = "train" if n_train == 0 else "test"
        raise DataError(
            f"{name}: {total} images leave the {empty} split empty "
            f"(train {n_train}, val {n_val}, test {n_test}); use more images"
        )
    if n_val == 0 and val_fraction > 0:
        raise DataError(
            f"{name}: val_fraction {val_fraction} of {n_train + n_val} images holds out none "
            f"(train {n_train}, val 0, test {n_test}); use more images, a larger val_fraction, "
            "or val_fraction 0 (no validation split)"
        )


def cap(indices: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """At most `n` of `indices`, stratified by `labels[indices]` where possible."""
    if n is None or n >= len(indices):
        return indices
    _, held = split_indices(labels[indices], n / len(indices), seed)
    return indices[held]


def resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Bilinear resize of (N, C, H, W) float images to (N, C, size, size), in chunks."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    # antialias only matters when shrinking; it keeps thin strokes from aliasing away
    out = [
        F.interpolate(
            images[i : i + chunk],
            size=(size, size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        for i in range(0, len(images), chunk)
    ]
    return torch.cat(out) if out else images.new_zeros(len(images), images.shape[1], size, size)


def make_bundle(
    name: str,
    train: Split,
    val: Split,
    test: Split,
    num_classes: int,
    class_names: list[str],
    part_names: list[str] | None = None,
    stats_from: torch.Tensor | None = None,
) -> DataBundle:
    """Normalise all splits in place with per-channel mean/std; wrap them up.

    The statistics come from `stats_from` (default: the train images). Loaders pass their
    whole train + val pool, which no seed changes: test images must come out bit-identical
    for every config.seed, and a seed-dependent mean would shift them.
    """
    imgs = train.images if stats_from is None else stats_from  # (N, C, H, W) in [0, 1]
    mean = imgs.mean(dim=(0, 2, 3))  # (C,)
    std = imgs.std(dim=(0, 2, 3)).clamp_min(1e-6)  # (C,)
    for split in (train, val, test):
        split.images.sub_(mean[None, :, None, None]).div_(std[None, :, None, None])
    return DataBundle(
        name=name,
        train=train,
        val=val,
        test=test,
        num_classes=num_classes,
        in_channels=int(train.images.shape[1]),
        image_size=int(train.images.shape[-1]),
        class_names=class_names,
        part_names=part_names or [],
        mean=mean.tolist(),
        std=std.tolist(),
    )


def subset(images: torch.Tensor, labels: torch.Tensor, idx: np.ndarray) -> Split:
    """A `Split` of the rows `idx` (copied, so that normalising it leaves the source alone)."""
    t = torch.as_tensor(idx, dtype=torch.long)
    return Split(images=images[t].contiguous(), labels=labels[t].contiguous())
