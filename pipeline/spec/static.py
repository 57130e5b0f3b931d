"""What the spec checks know of syncmodel without importing torch: each built-in data set's
split sizes for a config, each backbone's regularisable stages, and the metrics measured on
the validation split. tests/pipeline/test_validate_more.py keeps each equal to syncmodel's
own (the loaders, `syncmodel.nets.BACKBONES`, `syncmodel.training`).

A study is validated before anything heavy starts (`validate`, `launch`): these let it refuse
what a trial would fail on (an empty split, a layer the backbone lacks) in milliseconds.
"""

from __future__ import annotations

from typing import NamedTuple

from syncmodel.config import TrainConfig

# syncmodel.nets: @backbone(name, stages); the last stage is the default regularised layer.
BACKBONE_STAGES = {
    "simple_cnn": ("block1", "block2", "block3"),
    "vgg11_bn": ("stage1", "stage2", "stage3", "stage4", "stage5"),
    "resnet18": ("layer1", "layer2", "layer3", "layer4"),
}

# Reported per epoch from the validation split (syncmodel.training.inspect on `val`): NaN
# every epoch without one (val_fraction 0). Of the final metrics val_acc and best_val_acc come from it
# (spread, dead_fraction and neighbours are measured again on the test split at the end).
VAL_EPOCH_METRICS = ("val_acc", "spread", "dead_fraction", "neighbours")
VAL_FINAL_METRICS = ("val_acc", "best_val_acc")


class Sizes(NamedTuple):
    train: int
    val: int
    test: int


# syncmodel.data.digits: scikit-learn's 1797 images, a fixed 20 % test split (359).
DIGITS_IMAGES, DIGITS_TEST = 1797, 359
# syncmodel.data.shapes / torchvision_sets.load_fake_cifar10: generated, n_train default, test.
GENERATED = {"shapes": (4000, 1000), "shapes-hard": (4000, 1000), "fake-cifar10": (5000, 1000)}
# torchvision's files: the train pool (val is held out of it) and the test split.
TORCHVISION = {
    "mnist": (60000, 10000),
    "fashion-mnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
}
# Smallest image side a data set's generator draws (syncmodel.data.shapes).
MIN_IMAGE_SIZE = {"shapes": 32, "shapes-hard": 32}


def _held(fraction: float, n: int) -> int:
    # syncmodel.data.splits.split_indices: int(round(fraction * n)) held out
    return int(round(fraction * n))


def split_sizes(config: TrainConfig) -> Sizes | None:
    """The (train, val, test) sizes `syncmodel.data.load_data(config)` gives, or None where
    they depend on files (imagefolder) or the data set is not built in."""
    name, cap, fraction = config.dataset, config.n_train, config.val_fraction
    if name in GENERATED:
        default_train, n_test = GENERATED[name]
        n_train = cap or default_train
        # val sized so that it is `val_fraction` of train + val
        return Sizes(n_train, int(round(n_train * fraction / (1 - fraction))), n_test)
    if name == "digits":
        pool = DIGITS_IMAGES - DIGITS_TEST
        n_test = DIGITS_TEST
    elif name in TORCHVISION:
        pool, n_test = TORCHVISION[name]
    else:
        return None
    n_val = _held(fraction, pool)
    kept = pool - n_val
    return Sizes(kept if cap is None else min(cap, kept), n_val, n_test)
