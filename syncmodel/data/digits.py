"""`digits`: scikit-learn's bundled handwritten digits (1,797 real 8×8 images, 10 classes).

The embedded default data set: no download, runs anywhere. Upsampled to 16×16 by default so
that conv maps have room for a focus position.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits as _sk_load_digits

from syncmodel.config import TrainConfig
from syncmodel.data import DataBundle
from syncmodel.data.splits import TEST_SEED, cap, make_bundle, resize, split_indices, subset

DEFAULT_SIZE = 16
TEST_FRACTION = 0.2


def load_digits(config: TrainConfig) -> DataBundle:
    """Fixed stratified 20% test split (seed 0, whatever config.seed); `val_fraction` of the
    rest held out for validation with config.seed; `n_train` caps the training images."""
    raw = _sk_load_digits()
    labels_np = raw.target.astype(np.int64)  # (1797,)
    images = torch.from_numpy(raw.images.astype(np.float32) / 16.0)[
        :, None
    ]  # (N, 1, 8, 8) in [0, 1]
    images = resize(images, config.image_size or DEFAULT_SIZE).clamp_(0.0, 1.0)
    labels = torch.from_numpy(labels_np)

    rest, test_idx = split_indices(labels_np, TEST_FRACTION, TEST_SEED)
    # val is drawn before the cap, so it does not change with n_train
    tr, va = split_indices(labels_np[rest], config.val_fraction, config.seed)
    train_idx = cap(rest[tr], labels_np, config.n_train, config.seed)
    return make_bundle(
        "digits",
        train=subset(images, labels, train_idx),
        val=subset(images, labels, rest[va]),
        test=subset(images, labels, test_idx),
        num_classes=10,
        class_names=[str(d) for d in range(10)],
        stats_from=images[torch.as_tensor(rest)],
    )
