"""`mnist`, `fashion-mnist`, `cifar10`, `cifar100`, `imagefolder` from a data root, and the
generated `fake-cifar10` for smoke runs of the CIFAR study where no CIFAR exists offline.

The whole set is held in memory as float32 (CIFAR-10: 737 MB for train + test). Nothing here
touches the network unless `download: true`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from syncmodel.config import TrainConfig
from syncmodel.data import DataBundle, Split
from syncmodel.data.splits import (
    TEST_SEED,
    cap,
    check_sizes,
    make_bundle,
    resize,
    split_indices,
    subset,
)
from syncmodel.errors import DataError

if TYPE_CHECKING:
    from torchvision import datasets

# torchvision is imported where a set is read: its import costs a second (torch._dynamo), which
# the data sets outside this module (digits, shapes) never need.

# name -> (torchvision.datasets class name, what must lie under the data root)
_TORCHVISION = {
    "mnist": (
        "MNIST",
        "MNIST/raw/ with train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
    ),
    "fashion-mnist": (
        "FashionMNIST",
        "FashionMNIST/raw/ with the same four idx files as MNIST",
    ),
    "cifar10": (
        "CIFAR10",
        "cifar-10-batches-py/ with data_batch_1..5, test_batch, batches.meta",
    ),
    "cifar100": ("CIFAR100", "cifar-100-python/ with train, test, meta"),
}
IMAGEFOLDER_SIZE = 32
# torchvision.datasets.folder.IMG_EXTENSIONS, without importing torchvision (tests/syncmodel/test_data.py)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
TEST_FRACTION = 0.2  # imagefolder without a test/ folder


def data_root(config: TrainConfig) -> Path:
    return Path(config.data_root or "./data").expanduser().resolve()


def _open(name: str, root: Path, train: bool, download: bool) -> datasets.VisionDataset:
    from torchvision import datasets

    cls_name, expected = _TORCHVISION[name]
    try:
        return getattr(datasets, cls_name)(str(root), train=train, download=download)
    except Exception as exc:  # torchvision: RuntimeError when missing, URLError/OSError offline
        if download:
            raise DataError(
                f"{name}: could not download to {root} ({exc}). Put the data set there by hand "
                f"(expected {expected}), or retry where a network exists."
            ) from exc
        raise DataError(
            f"{name}: no data in {root} (expected {expected}). Put the data set there, "
            "or set download: true where a network exists."
        ) from exc


def _to_tensors(ds: datasets.VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.as_tensor(ds.data)
    # MNIST keeps (N, H, W) uint8; CIFAR (N, H, W, 3) uint8
    images = data[:, None] if data.ndim == 3 else data.permute(0, 3, 1, 2)  # (N, C, H, W)
    return images.float().div_(255.0), torch.as_tensor(ds.targets, dtype=torch.int64)


def _finish(
    name: str,
    config: TrainConfig,
    pool: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    class_names: list[str],
    where: str | None = None,
) -> DataBundle:
    """Resize, hold out val from the train pool (config.seed), cap n_train, normalise.
    `where` names the data in errors (default: `name`)."""
    images, labels = pool
    if config.image_size is not None:
        images, test = (
            resize(images, config.image_size),
            (resize(test[0], config.image_size), test[1]),
        )
    labels_np = labels.numpy()
    tr, va = split_indices(labels_np, config.val_fraction, config.seed)
    tr = cap(tr, labels_np, config.n_train, config.seed)
    check_sizes(where or name, len(tr), len(va), len(test[1]), config.val_fraction)
    return make_bundle(
        name,
        train=subset(images, labels, tr),
        val=subset(images, labels, va),
        test=Split(test[0], test[1]),
        num_classes=len(class_names),
        class_names=class_names,
        stats_from=images,
    )


def load_torchvision(name: str, config: TrainConfig) -> DataBundle:
    """One of the torchvision sets under the data root: its own test split, val from train."""
    root = data_root(config)
    train_ds = _open(name, root, train=True, download=config.download)
    test_ds = _open(name, root, train=False, download=config.download)
    return _finish(
        name, config, _to_tensors(train_ds), _to_tensors(test_ds), list(train_ds.classes)
    )


def _scan(folder: Path) -> dict[str, list[Path]]:
    """class name -> image files, for the class sub-folders of `folder` (hidden ones skipped).

    Only regular files count: a FIFO or device named `x.jpg` would block or never end the read.
    A class folder without images is refused rather than dropped: the class would silently
    vanish from the labels (and a test/ folder's class indices would shift).
    """
    found = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            f for f in sub.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
        )
        if not files:
            raise DataError(
                f"imagefolder: class folder {sub} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                "add images or remove the folder"
            )
        found[sub.name] = files
    return found


def _read(files: list[Path], size: int) -> torch.Tensor:
    import warnings

    from PIL import Image

    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(files):
        try:
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; as an error, a small file
            # that decodes to gigabytes (a decompression bomb) is refused before decoding.
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    out[i] = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise DataError(f"imagefolder: refusing image {path} ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - PIL's decoders raise OSError, ValueError, SyntaxError, ...
            raise DataError(
                f"imagefolder: cannot read image {path} ({exc.__class__.__name__}: {str(exc)[:200]})"
            ) from None
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, S, S)


def load_imagefolder(config: TrainConfig) -> DataBundle:
    """RGB images from data_root: train/<class>/* and test/<class>/*, or <class>/* alone, in
    which case a fixed 20% stratified test split (seed 0) is held out. Resized to image_size
    (default 32); files are read once, in one pass."""
    root = data_root(config)
    layout = f"{root}/train/<class>/*.png and {root}/test/<class>/*.png, or {root}/<class>/*.png"
    if not root.is_dir():
        raise DataError(f"imagefolder: no folder {root}. Put the images there as {layout}.")
    has_split = (root / "train").is_dir() and (root / "test").is_dir()
    pool = _scan(root / "train" if has_split else root)
    if not pool:
        raise DataError(f"imagefolder: no class folders with images in {root}. Expected {layout}.")
    classes = list(pool)
    if len(classes) < 2:
        # one class: every prediction is right, test_acc 1.0 says nothing
        raise DataError(
            f"imagefolder: {root}{'/train' if has_split else ''} has {len(classes)} class folder "
            f"({classes[0]}); a classifier needs at least 2. Expected {layout}."
        )
    files = [f for c in classes for f in pool[c]]
    labels = torch.tensor([i for i, c in enumerate(classes) for _ in pool[c]], dtype=torch.int64)
    size = config.image_size or IMAGEFOLDER_SIZE
    images = _read(files, size)
    if has_split:
        tested = _scan(root / "test")
        unknown = sorted(set(tested) - set(classes))
        if unknown:
            raise DataError(
                f"imagefolder: {root}/test has classes not in train/: {', '.join(unknown)}"
            )
        test_files = [f for c in tested for f in tested[c]]
        test_labels = [classes.index(c) for c in tested for _ in tested[c]]
        test = (_read(test_files, size), torch.tensor(test_labels, dtype=torch.int64))
    else:
        rest, held = split_indices(labels.numpy(), TEST_FRACTION, TEST_SEED)
        test = (images[held], labels[held])
        images, labels = images[rest], labels[rest]
    return _finish("imagefolder", config, (images, labels), test, classes, where=f"imagefolder {root}")


# --- fake-cifar10 -------------------------------------------------------------------------

FAKE_TRAIN, FAKE_TEST = 5000, 1000
FAKE_SEED = 0  # fixed, like shapes: every training seed sees the same images
_ANGLES = (0, 36, 72, 108, 144)  # degrees; class = (palette, angle)
_PALETTES = {"warm": (0.9, 0.5, 0.2), "cool": (0.2, 0.5, 0.9)}


def draw_fake_cifar(
    n: int, rng: np.random.Generator, size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, S, S) images in [0, 1] and labels: a grating patch at a random place on noise;
    orientation and palette together give the class, so neither alone suffices.

    Pixels are 8-bit levels k / 255, computed as the CIFAR loader computes them (`_to_tensors`),
    as the CIFAR-10 this stands in for has them: its bundles then travel through the object
    store in the same compact form (syncmodel.data.compact) as CIFAR's."""
    labels = rng.permutation(np.arange(n) % 10)
    angle = np.deg2rad(np.asarray(_ANGLES)[labels % 5])  # (n,)
    colour = np.asarray(list(_PALETTES.values()))[labels // 5]  # (n, 3)
    colour = colour + rng.normal(0, 0.08, size=(n, 3))  # palettes overlap a little
    grid = np.arange(size, dtype=np.float64)
    y, x = grid[None, :, None], grid[None, None, :]  # (1, S, 1), (1, 1, S)
    proj = y * np.sin(angle)[:, None, None] + x * np.cos(angle)[:, None, None]  # (n, S, S)
    wave = np.sin(
        2 * np.pi * proj / rng.uniform(4, 7, size=(n, 1, 1)) + rng.uniform(0, 2 * np.pi, (n, 1, 1))
    )
    half = rng.uniform(5, 10, size=(n, 1, 1)) * size / 32
    cy, cx = (rng.uniform(half[:, 0, 0], size - half[:, 0, 0], size=(2, n)))[:, :, None, None]
    inside = (np.abs(y - cy) <= half) & (np.abs(x - cx) <= half)  # (n, S, S)
    pattern = colour[:, :, None, None] * (0.6 + 0.4 * wave[:, None])  # (n, 3, S, S) tinted stripes
    background = rng.uniform(0.2, 0.6, size=(n, 3, 1, 1))
    images = np.where(inside[:, None], pattern, background) + rng.normal(0, 0.1, (n, 3, size, size))
    pixels = torch.from_numpy(np.round(np.clip(images, 0, 1) * 255).astype(np.uint8))
    return pixels.float().div_(255.0).numpy(), labels.astype(np.int64)


def load_fake_cifar10(config: TrainConfig) -> DataBundle:
    """Generated data of CIFAR-10's shape (3×32×32, 10 classes); `n_train` default 5000."""
    size = config.image_size or 32
    n_train = config.n_train or FAKE_TRAIN
    n_val = int(round(n_train * config.val_fraction / (1 - config.val_fraction)))
    splits = []
    for stream, n in enumerate((n_train, n_val, FAKE_TEST)):
        images, labels = draw_fake_cifar(n, np.random.default_rng([FAKE_SEED, stream]), size)
        splits.append(Split(torch.from_numpy(images), torch.from_numpy(labels)))
    names = [f"{p}-{a}deg" for p in _PALETTES for a in _ANGLES]
    return make_bundle("fake-cifar10", *splits, num_classes=10, class_names=names)
