"""Data sets by name (docs/design.md §2): a `DataBundle` of in-memory tensors, split train/val/test.

Contract (implemented per data set in this package):
    load_data(config: TrainConfig) -> DataBundle
Everything is held as tensors so that a bundle can be built once per node and shared by
trials (the pipeline puts it in Ray's object store, packed by `syncmodel.data.compact`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) float32, normalised
    labels: torch.Tensor  # (N,) int64
    # Ground truth for location/part metrics, where the data set has it (shapes):
    landmarks: torch.Tensor | None = None  # (N, K, 2) float32, (row, col) pixels; NaN = absent
    part_masks: torch.Tensor | None = None  # (N, P, H, W) bool, one mask per part type

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DataBundle:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    in_channels: int
    image_size: int  # square side after resizing
    class_names: list[str] = field(default_factory=list)
    part_names: list[str] = field(default_factory=list)  # names of landmark / part-mask channels
    # Per-channel statistics of the train split that normalised all splits: raw = x * std + mean
    # (pictures of inputs, exported model cards).
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)


def load_data(config) -> DataBundle:  # noqa: ANN001 - TrainConfig; avoids import cycle
    """Build the `DataBundle` named by `config.dataset` (registry in syncmodel.data.registry)."""
    from syncmodel.data.registry import DATASETS
    from syncmodel.data.splits import check_sizes

    bundle = DATASETS.get(config.dataset, field="dataset")(config)
    # Every loader, generated sets too: an empty split fails only later, inside training.
    check_sizes(bundle.name, len(bundle.train), len(bundle.val), len(bundle.test), config.val_fraction)
    return bundle
