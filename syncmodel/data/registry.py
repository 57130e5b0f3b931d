"""The data sets by name: `DATASETS.get(config.dataset)(config) -> DataBundle` (docs/design.md §2).

One table, so that the known names (listed in errors for unknown ones) live in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from syncmodel.config import TrainConfig
from syncmodel.data import DataBundle
from syncmodel.data.digits import load_digits
from syncmodel.data.shapes import load_shapes, load_shapes_hard
from syncmodel.data.torchvision_sets import load_fake_cifar10, load_imagefolder, load_torchvision
from syncmodel.registry import Registry

DATASETS: Registry[Callable[[TrainConfig], DataBundle]] = Registry("dataset")

DATASETS.register("digits")(load_digits)
DATASETS.register("shapes")(load_shapes)
DATASETS.register("shapes-hard")(load_shapes_hard)
for _name in ("mnist", "fashion-mnist", "cifar10", "cifar100"):
    DATASETS.register(_name)(partial(load_torchvision, _name))
DATASETS.register("imagefolder")(load_imagefolder)
DATASETS.register("fake-cifar10")(load_fake_cifar10)
